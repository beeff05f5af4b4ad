"""Source servers (SMS `POST /v3/sources` and friends): request bodies, views, commands, events.

Field names, limits and enums follow the SMS RegisterServer page. Where the
page's example disagrees with its table, the example is what agents send, so both
are accepted: `subvolumn` (the example's spelling, also the SDK's) for `subvolume`,
and numbers sent as strings in Btrfs and logical-volume fields are kept as sent.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from shared.contracts.paging import INT_MAX, Limit, Offset

LONG_MAX = 9_223_372_036_854_775_807

Str255 = Annotated[str, Field(max_length=255)]
Long = Annotated[int, Field(ge=0, le=LONG_MAX)]
Int = Annotated[int, Field(ge=0, le=INT_MAX)]
# The seed's example sends some Long/Integer fields as strings ("3.30GiB", "16384", "256").
LongOrText = Long | Str255
IntOrText = Int | Str255

OsType = Literal["WINDOWS", "LINUX"]
Firmware = Literal["BIOS", "UEFI"]
BootLoader = Literal["GRUB", "LILO"]
StartType = Literal["MANUAL", "MGC", ""]
Platform = Literal["hw", "ali", "aws", "azure", "gcp", "tencent", "vmware", "hyperv", "other"]
PartitionStyle = Literal["MBR", "GPT"]
# The table names BOOT and OS; the example also sends NORMAL and VOLUME_GROUP.
DiskUse = Literal["BOOT", "OS", "NORMAL", "VOLUME_GROUP"]
MigrationCycle = Literal["checking", "setting", "replicating", "syncing", "cutovering", "cutovered"]
SourceState = Literal[
    "unavailable",
    "waiting",
    "initialize",
    "replicate",
    "syncing",
    "stopping",
    "stopped",
    "deleting",
    "error",
    "cloning",
    "cutovering",
    "finished",
]


class _Body(BaseModel):
    # Unknown fields from newer agents are ignored rather than refused.
    model_config = ConfigDict(extra="ignore")


class PhysicalVolume(_Body):
    device_use: Str255 | None = None
    file_system: Str255 | None = None
    index: Int | None = None
    mount_point: Str255 | None = None
    name: Str255 | None = None
    size: Long | None = None
    used_size: Long | None = None
    inode_size: Int | None = None
    inode_nums: Long | None = None
    uuid: Str255 | None = None
    size_per_cluster: Int | None = None


class ServerDisk(_Body):
    name: Str255
    partition_style: PartitionStyle | None = None
    device_use: DiskUse
    size: Long
    used_size: Long
    physical_volumes: list[PhysicalVolume] = Field(max_length=65535)
    os_disk: bool | None = None
    relation_name: Str255 | None = None
    inode_size: Int | None = None


class BtrfsSubvolume(_Body):
    uuid: Str255
    is_snapshot: Str255
    subvol_id: Str255
    parent_id: Str255
    subvol_name: Str255
    subvol_mount_path: Str255


class BtrfsFileSystem(_Body):
    name: Str255
    label: Str255
    uuid: Str255
    device: Str255
    size: LongOrText
    nodesize: LongOrText
    sectorsize: IntOrText
    data_profile: Str255
    system_profile: Str255
    metadata_profile: Str255
    global_reserve1: Str255
    g_vol_used_size: LongOrText
    default_subvolid: Str255
    default_subvol_name: Str255
    default_subvol_mountpath: Str255
    subvolumn: list[BtrfsSubvolume] = Field(
        default_factory=list,
        max_length=65535,
        validation_alias=AliasChoices("subvolumn", "subvolume"),
        description="The subvolumes. The page's table calls it `subvolume`; both are accepted.",
    )


class NetWork(_Body):
    name: Str255
    ip: Str255
    ipv6: Str255 | None = None
    netmask: Str255
    gateway: Str255
    mtu: Int | None = None
    mac: Str255
    id: Str255 | None = None


class LogicalVolume(_Body):
    block_count: Int | None = None
    block_size: Annotated[int, Field(ge=0, le=1_048_576)] | None = None
    file_system: Str255
    inode_size: IntOrText
    inode_nums: Long | None = None
    device_use: Str255 | None = None
    mount_point: Annotated[str, Field(max_length=256)]
    name: Annotated[str, Field(max_length=1024)]
    size: Long
    used_size: Long
    free_size: Long


class VolumeGroup(_Body):
    components: Str255 | None = None
    free_size: Long | None = None
    logical_volumes: list[LogicalVolume] | None = Field(default=None, max_length=255)
    name: Str255 | None = None
    size: Long | None = None


class SourceServerBody(_Body):
    """`POST /v3/sources`: register a source server, or update it when `id` is given."""

    id: Str255 | None = None
    ip: Str255 | None = None
    name: Str255 | None = None
    hostname: Str255 | None = None
    os_type: OsType | None = None
    os_version: Str255 | None = None
    virtualization_type: Str255 | None = None
    linux_block_check: Str255 | None = None
    firmware: Firmware | None = None
    cpu_quantity: Annotated[int, Field(ge=0, le=65535)] | None = None
    memory: Long | None = None
    disks: list[ServerDisk] | None = Field(default=None, max_length=65535)
    btrfs_list: list[BtrfsFileSystem] | None = Field(default=None, max_length=65535)
    networks: list[NetWork] | None = Field(default=None, max_length=65535)
    domain_id: Str255 | None = None
    has_rsync: bool | None = None
    paravirtualization: bool | None = None
    raw_devices: Str255 | None = None
    driver_files: bool | None = None
    system_services: bool | None = None
    account_rights: bool | None = None
    boot_loader: BootLoader | None = None
    system_dir: Str255 | None = None
    volume_groups: list[VolumeGroup] | None = Field(default=None, max_length=65535)
    agent_version: Str255 | None = None
    kernel_version: Str255 | None = None
    migration_cycle: MigrationCycle | None = None
    state: SourceState | None = None
    oem_system: bool | None = None
    start_type: StartType | None = None
    io_read_wait: Annotated[float, Field(ge=0.0, le=10000.0)] | None = None
    has_tc: bool | None = None
    platform: Platform | None = None


# Mandatory when registering (not when updating). The table also names `hostname`,
# but the page's own example omits it and sends `name`: one of the two is required.
REQUIRED_FOR_REGISTRATION = ("ip", "os_type", "os_version")


class SourceServerId(BaseModel):
    id: Str255


class SourceServerView(SourceServerBody):
    """A stored source server: every field it was registered with, plus what Rehost keeps."""

    model_config = ConfigDict(extra="allow")

    id: str
    domain_id: str | None = None
    state: SourceState = "waiting"
    add_date: int | None = Field(default=None, description="epoch milliseconds, as SMS has it")
    created_at: str
    updated_at: str
    version: int


class SourceServerList(BaseModel):
    count: int = Field(description="How many servers match the filter, ignoring limit and offset")
    source_servers: list[SourceServerView]


class ListSources(BaseModel):
    """Query of `GET /v3/sources` (and the `sms.source.list` command)."""

    state: SourceState | None = None
    name: Annotated[str, Field(max_length=255, description="substring of the name")] | None = None
    ip: Str255 | None = None
    id: Str255 | None = None
    migration_cycle: MigrationCycle | None = None
    connected: bool | None = Field(
        default=None, description="true once the server's agent has registered it"
    )
    limit: Limit = 50
    offset: Offset = 0


SourceId = Annotated[str, Field(min_length=1, max_length=36)]


class DeleteSources(BaseModel):
    """`POST /v3/sources/delete` (SMS DeleteServers), and `sms.source.delete_many`."""

    ids: list[SourceId] = Field(min_length=1, max_length=50)


class SourceOverview(BaseModel):
    """`GET /v3/sources/overview` (SMS ShowOverview): the caller's servers by state."""

    waiting: int = 0
    replicate: int = 0
    syncing: int = 0
    stopped: int = 0
    deleting: int = 0
    cutovering: int = 0
    unavailable: int = 0
    stopping: int = 0
    skipping: int = 0
    finished: int = 0
    initialize: int = 0
    error: int = 0
    cloning: int = 0
    unconfigured: int = 0


class SourceServerRef(BaseModel):
    """Body of `sms.source.get` and `sms.source.delete`."""

    server_id: Annotated[str, Field(min_length=1, max_length=255)]


MAX_LOOKUP = 500


class SourceServerIds(BaseModel):
    """Body of `sms.source.known` and `sms.command.next_many`: server ids of the message's
    tenant; `sms.source.known` answers the ones the tenant has."""

    server_ids: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        max_length=MAX_LOOKUP
    )


class SourceRegistered(BaseModel):
    server: SourceServerView


class SourceUpdated(BaseModel):
    server: SourceServerView
    changed: list[str] = Field(description="top-level fields whose value changed")


class SourceDeleted(BaseModel):
    server_id: str
