"""SMS source-server routes: register/update, list, show, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from shared.auth import Principal
from shared.contracts.errors import SMS_ERRORS
from shared.contracts.sources import (
    DeleteSources,
    ListSources,
    SourceOverview,
    SourceServerBody,
    SourceServerId,
    SourceServerList,
    SourceServerRef,
    SourceServerView,
)
from shared.envelope import Reply

from .deps import NextCommandsDep, RequesterDep, Senders, SendersDep, require
from .replies import ask, respond

router = APIRouter(prefix="/v3/sources", tags=["SMS source servers"], responses=SMS_ERRORS)
ServerId = Annotated[str, Path(min_length=1, max_length=255)]
Registrant = Annotated[Principal, Depends(require("sms:server:migrationServer"))]
Reader = Annotated[Principal, Depends(require("sms:server:queryServer"))]
Deleter = Annotated[Principal, Depends(require("sms:server:deleteServer"))]


@router.post(
    "",
    response_model=SourceServerId,
    summary="Register a source server (or update it when `id` is given)",
    responses={404: SMS_ERRORS[400] | {"description": "`id` given but no such server"}},
)
async def register_source(
    body: SourceServerBody, senders: SendersDep, caller: Registrant
) -> Response:
    return respond(await send_register(senders, caller, body))


async def send_register(senders: Senders, caller: Principal, body: SourceServerBody) -> Reply:
    """The register, as the route and the fast path (writes.py) send it."""
    # Only the fields sent: an update changes those and no others.
    sent = body.model_dump(mode="json", exclude_unset=True, by_alias=True)
    host = (body.hostname or body.name or "").lower()
    identity = body.id or f"{host}\x1f{body.ip}"  # registers of one server go in order
    return await senders.registers.send(caller.domain_id, identity, sent)


@router.get("", response_model=SourceServerList, summary="List source servers, newest first")
async def list_sources(
    query: Annotated[ListSources, Query()],
    requester: RequesterDep,
    caller: Reader,
) -> Response:
    payload = query.model_dump_json().encode()
    reply = await requester.request("sms.source.list", payload, domain_id=caller.domain_id)
    return respond(reply)


@router.get(
    "/overview",
    response_model=SourceOverview,
    summary="Count the caller's source servers by state (SMS ShowOverview)",
)
async def show_overview(requester: RequesterDep, caller: Reader) -> Response:
    return respond(
        await requester.request("sms.source.overview", b"{}", domain_id=caller.domain_id)
    )


@router.post(
    "/delete",
    summary="Delete source servers in a batch (SMS DeleteServers)",
    description=(
        "Each server follows the single-delete rules. All are checked first: when one of "
        "them may not be deleted (no such server, or a task owns it), the answer is its "
        "error and none is deleted. 200 `{}` when all are."
    ),
    responses={
        404: SMS_ERRORS[400] | {"description": "One of the servers does not exist"},
        409: SMS_ERRORS[400] | {"description": "A task owns one of the servers"},
    },
)
async def delete_sources(
    body: DeleteSources, requester: RequesterDep, known: NextCommandsDep, caller: Deleter
) -> Response:
    answered = await ask(
        requester, "sms.source.delete_many", body.model_dump_json().encode(), caller
    )
    if answered.status_code == 200:
        for server_id in body.ids:
            known.forget(server_id)  # its agent's polls answer 404 from now on
    return answered


@router.get(
    "/{source_id}",
    response_model=SourceServerView,
    summary="Show a source server",
    responses={404: SMS_ERRORS[400] | {"description": "No such server in the caller's domain"}},
)
async def show_source(source_id: ServerId, requester: RequesterDep, caller: Reader) -> Response:
    payload = SourceServerRef(server_id=source_id).model_dump_json().encode()
    reply = await requester.request("sms.source.get", payload, domain_id=caller.domain_id)
    return respond(reply)


@router.delete(
    "/{source_id}",
    summary="Delete a source server (200 `{}`, as the SMS page)",
    responses={
        404: SMS_ERRORS[400] | {"description": "No such server in the caller's domain"},
        409: SMS_ERRORS[400] | {"description": "A task owns the server"},
    },
)
async def delete_source(
    source_id: ServerId, requester: RequesterDep, known: NextCommandsDep, caller: Deleter
) -> Response:
    payload = SourceServerRef(server_id=source_id).model_dump_json().encode()
    answered = await ask(requester, "sms.source.delete", payload, caller)
    if answered.status_code == 200:
        known.forget(source_id)  # its agent's polls answer 404 from now on
    return answered
