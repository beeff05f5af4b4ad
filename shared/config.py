"""Every setting is a REHOST_* environment variable, read once at start into `Settings`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Signs tokens when REHOST_AUTH_SECRET is not set; anyone who read this file can mint them.
DEVELOPMENT_SECRET = "change-me-rehost-dev-secret-32-bytes!"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REHOST_", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    store_url: str = Field(
        default="",
        description="sqlite:///path or mongodb://…; empty means sqlite:///{data_dir}/{service}.db",
    )
    data_dir: Path = Path("var")
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    gateway_workers: int = 1
    health_host: str = "127.0.0.1"
    registry_health_port: int = 8101
    command_result_health_port: int = 8102
    task_lock_health_port: int = 8103
    auth_secret: str = DEVELOPMENT_SECRET
    development: bool = Field(
        default=False, description="a development machine: the development auth secret is fine"
    )
    access_keys: str = Field(
        default="", description="file of SDK access keys (one JSON object a line); empty: none"
    )
    reply_timeout: float = Field(default=10.0, description="seconds the gateway waits for a reply")
    max_body_bytes: int = 1_048_576
    max_message_bytes: int = Field(
        default=4_194_304, description="larger command messages are dead-lettered unread"
    )
    max_in_flight: int = Field(default=512, description="gateway requests awaiting a reply")
    prefetch: int = 64
    delivery_limit: int = 5
    outbox_interval: float = Field(default=1.0, description="seconds between outbox sweeps")
    script_executor_health_port: int = 8104
    agent_amqp_url: str = Field(default="", description="the agent's own account; empty: amqp_url")
    agent_domain: str = Field(default="default", description="the tenant this agent serves")
    agent_heartbeat: float = Field(default=5.0, description="seconds between agent heartbeats")
    agent_parallel: int = Field(default=4, ge=1, description="runs an agent executes at once")
    agent_trust_on_first_use: bool = Field(
        default=False,
        description="an unknown agent's first heartbeat binds it to the tenant it names",
    )
    agent_offline_after: float = Field(
        default=15.0, description="seconds without a heartbeat before an agent counts as offline"
    )
    run_grace: float = Field(
        default=10.0, description="seconds past a run's timeout before its host is marked TIMEOUT"
    )
    log_format: str = Field(default="auto", description="json, console or auto (console on a tty)")
    log_level: str = "INFO"

    @property
    def insecure_secret(self) -> bool:
        """Tokens are signed with the published development secret outside development."""
        return self.auth_secret == DEVELOPMENT_SECRET and not self.development

    def store_url_for(self, service: str) -> str:
        if self.store_url:
            return self.store_url
        return f"sqlite:///{self.data_dir / (service + '.db')}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
