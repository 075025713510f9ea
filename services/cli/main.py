"""The `deskbridge` command: run the stack, administer the directory, send, pull, verify."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from schemas.audit import AuditBundle, EvidenceBundle, LeafPage
from schemas.notices import CASE_REF_PATTERN, Notice, NoticeDraft
from services.cli.client import Api, ClientError, TrustedDirectory
from services.cli.profiles import Profile, ProfileError
from services.envelope.errors import EnvelopeError
from services.envelope.keys import AgencyKeys, PublicKey
from services.envelope.receipts import make_receipt
from services.envelope.service import open_envelope, parse_envelope, seal_notice
from services.evidence.checks import check_evidence, failures
from services.platform.errors import Error
from services.platform.problems import one_line
from services.transparency.checkpoints import LOG_VKEY_FILE
from services.transparency.note import (
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    NoteError,
    NoteVerifier,
    open_checkpoint,
    parse_vkey,
    signature_line,
)
from services.transparency.verify import LeafCheck, check_bundle, compare_checkpoints, open_log_checkpoint
from services.trust.httpsig import RequestSigner
from services.trust.signed_directory import DIRECTORY_SIGNER, load_pin, save_pin

app = typer.Typer(no_args_is_help=True, help="deskbridge: signed, encrypted case notices over Kafka.")
notice_app = typer.Typer(no_args_is_help=True, help="Send notices and follow their delivery.")
inbox_app = typer.Typer(no_args_is_help=True, help="Pull, open and acknowledge your agency's notices.")
audit_app = typer.Typer(no_args_is_help=True, help="Check the audit log.")
evidence_app = typer.Typer(no_args_is_help=True, help="Export and check one notice's evidence bundle.")
agency_app = typer.Typer(no_args_is_help=True, help="Register agencies (administrator).")
keys_app = typer.Typer(no_args_is_help=True, help="Make and register an agency's keys.")
case_app = typer.Typer(no_args_is_help=True, help="Follow a case: its notices and replies as a thread.")
directory_app = typer.Typer(no_args_is_help=True, help="Pin and read the signed agency directory.")
credential_app = typer.Typer(no_args_is_help=True, help="Issue (administrator) and rotate API credentials.")
kafka_app = typer.Typer(no_args_is_help=True, help="Prepare the Kafka cluster (administrator).")
for sub, name in (
    (notice_app, "notice"),
    (inbox_app, "inbox"),
    (audit_app, "audit"),
    (evidence_app, "evidence"),
    (agency_app, "agency"),
    (keys_app, "keys"),
    (credential_app, "credential"),
    (case_app, "case"),
    (directory_app, "directory"),
    (kafka_app, "kafka"),
):
    app.add_typer(sub, name=name)

Home = Annotated[
    Path, typer.Option("--home", envvar="DESKBRIDGE_HOME", help="Folder of identities: <home>/<name>/.")
]
Server = Annotated[str, typer.Option("--server", envvar="DESKBRIDGE_SERVER", help="Gateway URL.")]
AuditServer = Annotated[str, typer.Option("--audit-server", envvar="DESKBRIDGE_AUDIT_SERVER")]
As = Annotated[str, typer.Option("--as", help="The identity to act as (an agency id, auditor, admin).")]
Sign = Annotated[
    bool,
    typer.Option(
        "--sign", help="Sign each request with the agency's own key (RFC 9421) instead of its credential."
    ),
]
DEFAULT_HOME = Path("var/demo")
FOLLOW_WAIT_S = 20  # under the client timeout
DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_AUDIT = "http://127.0.0.1:8081"


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Every expected failure ends the command with one clear line and exit code 1."""
    try:
        yield
    except Error as exc:
        typer.echo(one_line(exc.code, exc.detail), err=True)
        raise typer.Exit(1) from exc
    except BrokenPipeError as exc:
        # The reader left (`deskbridge ... | head`): nothing is wrong, and nobody is left to tell. Output
        # still buffered would fail again at exit, so it goes nowhere; 141 is a shell's 128 + SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(141) from exc
    except OSError as exc:
        typer.echo(one_line("client_error", str(exc)), err=True)
        raise typer.Exit(1) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        typer.echo(one_line("invalid_request", f"{where}: {first['msg']}"), err=True)
        raise typer.Exit(1) from exc


def _notice_id(value: str, option: str = "") -> str:
    """Ids go into URLs such as /v1/notices/{id}; a shortened one (6f1c...) is refused here, in words,
    rather than by the server. No prefix is resolved: a recall must name exactly one notice."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ClientError(
            f"{option}{value!r} is not a notice id: ids are full UUIDs (36 characters, as `notice send` "
            "prints them)",
            "invalid_request",
        ) from None


def _api(home: Path, name: str, server: str, sign: bool = False) -> Api:
    profile = Profile(home, name)
    if sign:
        return Api(server, auth=RequestSigner(profile.keys().signer()))
    return Api(server, profile.credential())


@app.command()
def up(
    var: Annotated[Path, typer.Option(help="Where data, logs and demo identities live.")] = Path("var"),
    kafka_port: int = 9092,
    gateway_port: int = 8080,
    audit_port: int = 8081,
) -> None:
    """Start Kafka, the gateway, ingest and audit with demo agencies; Ctrl-C stops it all."""
    from services.cli.stack import run_stack

    with one_line_errors():
        try:
            run_stack(var, kafka_port, gateway_port, audit_port)
        except RuntimeError as exc:
            raise ClientError(str(exc)) from exc


@kafka_app.command("setup")
def kafka_setup() -> None:
    """Make the topics, and on a broker that checks ACLs grant each service identity its part; as the
    administrator identity the DESKBRIDGE_KAFKA_* settings name. Run it again at will: it only adds."""
    from aiokafka.errors import KafkaError

    from services.platform.kafka import KafkaAccess, Topics, create_topics
    from services.platform.settings import Settings

    settings = Settings()
    topics = Topics(settings.topic_prefix)
    with one_line_errors():
        try:
            asyncio.run(create_topics(KafkaAccess.of(settings), topics, settings.topic_partitions))
        except KafkaError as exc:
            raise ClientError(
                f"Kafka refused ({type(exc).__name__}): only the administrator identity makes topics and "
                f"grants; check DESKBRIDGE_KAFKA_CERT_FILE and DESKBRIDGE_KAFKA_BOOTSTRAP"
            ) from exc
    typer.echo(f"Kafka topics ready: {', '.join(topics.all())}")


@agency_app.command("add")
def agency_add(
    agency_id: str,
    name: Annotated[str, typer.Option(help="The agency's full name.")],
    kind: Annotated[str, typer.Option(help="desk or partner")] = "partner",
    as_: As = "admin",
    home: Home = DEFAULT_HOME,
    server: Server = DEFAULT_SERVER,
) -> None:
    """Register an agency in the directory."""
    with one_line_errors(), _api(home, as_, server) as api:
        api.call("POST", "/v1/admin/agencies", json={"id": agency_id, "name": name, "kind": kind})
        typer.echo(f"registered {agency_id} ({kind})")


@keys_app.command("generate")
def keys_generate(
    agency_id: str,
    register: Annotated[bool, typer.Option(help="Send the public halves to the directory.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing key file.")] = False,
    as_: As = "admin",
    home: Home = DEFAULT_HOME,
    server: Server = DEFAULT_SERVER,
) -> None:
    """Make an agency's Ed25519 and X25519 keys on this machine; private halves never leave it."""
    with one_line_errors():
        profile = Profile(home, agency_id)
        if (profile.folder / "keys.jwks.json").exists() and not force:
            raise ProfileError(f"{profile.folder} already holds keys; --force replaces them")
        keys = AgencyKeys.generate(agency_id)
        path = keys.save(profile.folder)
        typer.echo(f"private keys written to {path} (mode 600)")
        if register:
            with _api(home, as_, server) as api:
                for jwk in keys.public_jwks():
                    api.call("POST", f"/v1/admin/agencies/{agency_id}/keys", json={"jwk": jwk})
                    typer.echo(f"registered {jwk['use']} key {jwk['kid']}")


@credential_app.command("issue")
def credential_issue(
    role: Annotated[str, typer.Option(help="agency, auditor or admin")],
    agency: Annotated[str | None, typer.Option(help="The agency, for role agency.")] = None,
    name: Annotated[str | None, typer.Option(help="Profile to save it under (default: the agency).")] = None,
    as_: As = "admin",
    home: Home = DEFAULT_HOME,
    server: Server = DEFAULT_SERVER,
) -> None:
    """Issue a credential and save it in a profile (it is shown nowhere else)."""
    with one_line_errors(), _api(home, as_, server) as api:
        body = api.call("POST", "/v1/admin/credentials", json={"role": role, "agency": agency})
        path = Profile(home, name or agency or role).save_credential(body["token"])
        typer.echo(f"credential {body['credential_id']} ({role}) saved to {path}")


@credential_app.command("rotate")
def credential_rotate(
    as_: As,
    grace: Annotated[int, typer.Option(help="Seconds the old credential keeps working (0 to 86400).")] = 0,
    home: Home = DEFAULT_HOME,
    server: Server = DEFAULT_SERVER,
) -> None:
    """Replace your credential with a new one, saved in the profile; the old one stops after --grace."""
    with one_line_errors(), _api(home, as_, server) as api:
        body = api.call("POST", "/v1/credentials/rotate", json={"grace_s": grace})
        path = Profile(home, as_).save_credential(body["token"])
        typer.echo(
            f"credential {body['credential_id']} saved to {path}; "
            f"{body['replaces']} stops working at {body['replaced_until']}"
        )


@notice_app.command("send")
def notice_send(
    as_: As,
    to: Annotated[str, typer.Option(help="Recipient agency ids, comma-separated.")],
    type_: Annotated[str, typer.Option("--type", help="e.g. kidnapping_confinement")],
    priority: Annotated[str, typer.Option(help="flash, immediate or routine")],
    tlp: Annotated[str, typer.Option(help="clear, green, amber, amber+strict or red")],
    case_ref: Annotated[str, typer.Option(help="The desk's case number, e.g. KD-2025-0331")],
    file: Annotated[Path, typer.Option(help="JSON with summary, details, subjects, locations ...")],
    in_reply_to: Annotated[str | None, typer.Option(help="The notice this one answers.")] = None,
    forwarded_from: Annotated[str | None, typer.Option(help="The notice this one passes on.")] = None,
    keys: Annotated[
        Path | None,
        typer.Option(
            help="Seal here with the private keys in this folder (default for partners: the profile's)."
        ),
    ] = None,
    sign: Sign = False,
    home: Home = DEFAULT_HOME,
    server: Server = DEFAULT_SERVER,
) -> None:
    """Send a notice. A partner (or anyone given --keys) seals it on this machine and posts the sealed
    envelope; the desk may leave sealing to its gateway."""
    with one_line_errors():
        try:
            content: dict[str, Any] = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise ClientError(f"{file} is not valid JSON: {exc}") from exc
        draft = NoticeDraft.model_validate(
            {
                "notice_id": str(uuid.uuid4()),
                **content,
                "type": type_,
                "priority": priority,
                "tlp": tlp,
                "case_ref": case_ref,
                "recipients": [r.strip() for r in to.split(",") if r.strip()],
                "in_reply_to": in_reply_to and _notice_id(in_reply_to, "--in-reply-to "),
                "forwarded_from": forwarded_from and _notice_id(forwarded_from, "--forwarded-from "),
            }
        )
        profile = Profile(home, as_)
        with _api(home, as_, server, sign) as api:
            directory = api.directory(load_pin(profile.folder))
            me = directory.document.agency(as_)
            if keys is None and me is not None and me.kind == "desk":
                body = api.call("POST", "/v1/notices", json=draft.model_dump(mode="json", exclude_none=True))
            else:
                own = AgencyKeys.load(keys or profile.folder)
                if own.agency != as_:
                    raise ClientError(f"the keys in {keys or profile.folder} are {own.agency}'s, not {as_}'s")
                notice = Notice(**draft.model_dump(), sender=as_, sent_at=datetime.now(UTC))
                recipients = [directory.encryption_key(r) for r in notice.recipients]
                envelope = seal_notice(notice, own.signer(), recipients)
                body = api.call(
                    "POST", "/v1/envelopes", content=envelope, headers={"Content-Type": "application/json"}
                )
                typer.echo(f"sealed here by {as_} with key {own.signing_kid}")
        typer.echo(f"accepted {body['notice_id']} (durable in Kafka); status: {body['status_url']}")


@notice_app.command("status")
def notice_status(
    notice_id: str, as_: As, sign: Sign = False, home: Home = DEFAULT_HOME, server: Server = DEFAULT_SERVER
) -> None:
    """Per-recipient delivery state of a notice you sent."""
    with one_line_errors(), _api(home, as_, server, sign) as api:
        body = api.call("GET", f"/v1/notices/{_notice_id(notice_id)}")
        typer.echo(f"notice {body['notice_id']}  case {body['case_ref']}  from {body['sender']}")
        for r in body["recipients"]:
            when = r.get(f"{r['state']}_at") or ""  # since when it is in the state shown
            marks = [
                "signed receipt" if r.get("receipt") else "",
                f"ESCALATED {r['escalated_at']}"
                if r.get("escalated_at") and r["state"] != "acknowledged"
                else "",
            ]
            extra = "  ".join(m for m in marks if m)
            typer.echo(f"  {r['agency']:<28} {r['state']:<13} {when}  {extra}".rstrip())


@inbox_app.command("pull")
def inbox_pull(
    as_: As,
    ack: Annotated[bool, typer.Option(help="Acknowledge each notice once it is opened and verified.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print each opened notice as a JSON line.")] = False,
    follow: Annotated[
        bool, typer.Option(help="Keep waiting for new notices (long-poll) until Ctrl-C.")
    ] = False,
    sign: Sign = False,
    home: Home = DEFAULT_HOME,
    server: Server = DEFAULT_SERVER,
) -> None:
    """Pull your inbox, decrypt with your own keys, verify each sender's signature, acknowledge."""
    with one_line_errors():
        profile = Profile(home, as_)
        keys = profile.keys()
        opened = 0
        with _api(home, as_, server, sign) as api:
            directory = api.directory(load_pin(profile.folder))
            for item in _inbox_items(api, follow):
                if item["state"] in ("acknowledged", "recalled"):
                    continue
                notice = _open(directory, keys, item)
                opened += 1
                if as_json:
                    typer.echo(notice.model_dump_json())
                else:
                    typer.echo(
                        f"[{notice.priority.upper()}] {notice.type} {notice.case_ref} from {notice.sender} "
                        f"(TLP:{notice.tlp.upper()}) id {notice.notice_id}\n  {notice.summary}"
                        f"\n  signature verified: {notice.sender}"
                    )
                if ack:
                    # The receipt is signed here, with this agency's key, over the envelope as received.
                    digest = hashlib.sha256(item["envelope"].encode()).hexdigest()
                    signed = make_receipt(keys.signer(), str(notice.notice_id), digest)
                    api.call("POST", f"/v1/inbox/{notice.notice_id}/ack", json={"receipt": signed})
                    if not as_json:
                        typer.echo("  acknowledged")
        if not as_json:
            typer.echo(f"{opened} notice(s) opened")


def _inbox_items(api: Api, follow: bool = False) -> Iterator[dict[str, Any]]:
    """Every page from the start; with `follow`, then long-polls for more (a flash notice shows at once)."""
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"after": cursor} if cursor else {}
        if follow:
            params["wait"] = FOLLOW_WAIT_S
        page = api.call("GET", "/v1/inbox", params=params)
        yield from page["items"]
        if not page["items"] and not follow:
            return
        cursor = page["next_cursor"] or cursor


def _open(directory: TrustedDirectory, keys: AgencyKeys, item: dict[str, Any]) -> Notice:
    envelope = parse_envelope(item["envelope"])
    if envelope.routing.sender != item["sender"]:
        raise EnvelopeError("header_mismatch", "the inbox entry names another sender than the envelope")
    # Verified with the sender's keys as they were when it was sent: rotation does not orphan old notices.
    lookup = directory.signing_key(envelope.routing.sender, envelope.routing.sent_at)
    return open_envelope(envelope, keys.decryption_keys(), lookup)


LOG_CHECKPOINT_FILE = "audit-checkpoint.txt"  # the last checkpoint `audit verify` found intact
WITNESS_CHECKPOINT_FILE = "audit-witness-checkpoint.txt"  # the last checkpoint this agency cosigned
LogKey = Annotated[
    Path | None, typer.Option("--log-key", help="The log's vkey file (default: audit-log.vkey of --as).")
]


class AuditFindings(Error):
    """The log failed a check: each finding names what is wrong."""

    code = "audit_findings"

    def __init__(self, findings: list[str]) -> None:
        self.findings = list(dict.fromkeys(findings))  # the same finding from two checks counts once
        super().__init__(f"audit log is NOT intact ({len(self.findings)} problem(s))")


class EvidenceFindings(Error):
    """An evidence bundle failed checks, each already printed."""

    code = "evidence_findings"


@contextmanager
def audit_errors() -> Iterator[None]:
    with one_line_errors():
        try:
            yield
        except AuditFindings as exc:
            for finding in exc.findings:
                typer.echo(finding, err=True)
            raise


def _log_verifier(profile: Profile, path: Path | None) -> NoteVerifier:
    path = path or profile.folder / LOG_VKEY_FILE
    try:
        verifier = parse_vkey(path.read_text().strip())
    except FileNotFoundError as exc:
        raise ProfileError(f"no pinned audit log key at {path}") from exc
    if not isinstance(verifier, NoteVerifier):
        raise ProfileError(f"{path} is a cosignature key, not a log key")
    return verifier


def _remembered(path: Path, log: NoteVerifier) -> Checkpoint | None:
    if not path.exists():
        return None
    return open_log_checkpoint(path.read_text(), log, f"the remembered checkpoint {path}")


def _latest(api: Api, log: NoteVerifier, remembered: Checkpoint | None) -> tuple[str, Checkpoint, list[str]]:
    """The server's latest checkpoint, checked against the log key and the remembered checkpoint."""
    note = api.text("GET", "/v1/audit/checkpoint")
    latest = open_log_checkpoint(note, log, "the latest checkpoint")
    if remembered is None:
        return note, latest, []
    proof = None
    if remembered.size < latest.size:
        params = {"from": remembered.size, "to": latest.size}
        proof = api.call("GET", "/v1/audit/proof/consistency", params=params)["proof"]
    return note, latest, compare_checkpoints(remembered, latest, proof)


def _cosigned(
    api: Api,
    log: NoteVerifier,
    latest: Checkpoint,
    sizes: list[int],
    directory: TrustedDirectory,
    witnesses: list[str],
) -> tuple[dict[str, int], list[str]]:
    """The newest checkpoint up to `latest` each witness cosigned, with its directory key; a finding for
    each that cosigned none. Every such checkpoint was just checked against the tree, so a witness's
    cosignature means it was shown this same log."""
    found: dict[str, int] = {}
    verifiers = {}
    for name in witnesses:
        agency = directory.document.agency(name)
        kids = [k.kid for k in agency.keys if k.use == "sig" and k.status == "active"] if agency else []
        if not kids:
            raise ClientError(f"witness {name} has no active signing key in the directory")
        verifiers[name] = CosignatureVerifier(name, directory.signing_key(name, datetime.now(UTC))(kids[-1]))
    for size in (s for s in sizes if s <= latest.size):
        if len(found) == len(verifiers):
            break
        note = api.text("GET", f"/v1/audit/checkpoints/{size}")
        _, names = open_checkpoint(note, log.name, log, list(verifiers.values()))
        for name in names:
            found.setdefault(name, size)
    missing = [
        f"no checkpoint up to {latest.size} is cosigned by witness {n}" for n in verifiers if n not in found
    ]
    return found, missing


def _pages(api: Api, path: str, key: str, params: dict[str, Any]) -> Iterator[Any]:
    after = 0
    while True:
        page = api.call("GET", path, params={**params, "after": after, "limit": 1000})
        yield from page[key]
        if page["next_after"] is None:
            return
        after = page["next_after"]


def _check_live(api: Api, log: NoteVerifier, latest: Checkpoint, published: list[Any]) -> list[str]:
    """Every leaf, stored node and published checkpoint the server holds up to `latest`."""
    size = latest.size
    leaves = LeafCheck(0, size)
    for start in range(0, size, 1000):
        page = LeafPage.model_validate(
            api.call("GET", "/v1/audit/leaves", params={"start": start, "end": min(size, start + 1000)})
        )
        leaves.add(page.leaves)
    leaves.finish()
    findings = leaves.problems
    for level in range(1, size.bit_length()):
        count = size >> level
        nodes: dict[int, str] = {}
        for start in range(0, count, 1000):
            params = {"level": level, "start": start, "end": min(count, start + 1000)}
            nodes |= {
                n["index"]: n["hash"] for n in api.call("GET", "/v1/audit/nodes", params=params)["nodes"]
            }
        findings += leaves.check_nodes(level, nodes)
    findings += leaves.check_root(latest, f"checkpoint {size}")
    for item in published:
        try:
            checkpoint = open_log_checkpoint(item["note"], log, f"checkpoint {item['size']}")
        except NoteError as exc:
            findings.append(exc.detail)
            continue
        if checkpoint.size != item["size"]:
            findings.append(f"checkpoint {item['size']}: its note says size {checkpoint.size}")
        elif checkpoint.size <= size:
            findings += leaves.check_root(checkpoint, f"checkpoint {checkpoint.size}")
    return findings


@audit_app.command("verify")
def audit_verify(
    as_: As = "auditor",
    home: Home = DEFAULT_HOME,
    audit_server: AuditServer = DEFAULT_AUDIT,
    bundle: Annotated[Path | None, typer.Option(help="Check this exported bundle offline.")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Offline: the signed checkpoint the bundle must agree with.")
    ] = None,
    log_key: LogKey = None,
    witness: Annotated[
        list[str] | None,
        typer.Option(
            help="Also require a checkpoint cosigned by this agency (repeatable); keys from the "
            "signed directory, so --server is needed."
        ),
    ] = None,
    server: Server = DEFAULT_SERVER,
) -> None:
    """Check the audit log against its signed checkpoints, trusting nothing the server computed.

    Live: the latest checkpoint's signature (pinned log key), its consistency with the checkpoint this
    identity saw last (a fork or rollback is reported), every leaf, stored node and checkpoint, and with
    --witness that each named witness cosigned one of those checkpoints (so it saw this same log).
    Offline (--bundle and --checkpoint, no network): the bundle's signature, leaves and proofs."""
    with audit_errors():
        profile = Profile(home, as_)
        log = _log_verifier(profile, log_key)
        if bundle is not None or checkpoint is not None:
            if bundle is None or checkpoint is None:
                raise ProfileError("offline verification takes both --bundle and --checkpoint")
            trusted = open_log_checkpoint(checkpoint.read_text(), log, f"checkpoint {checkpoint}")
            exported = AuditBundle.model_validate_json(bundle.read_text())
            findings = check_bundle(exported, trusted, log)
            if findings:
                raise AuditFindings(findings)
            typer.echo(
                f"bundle intact: leaves {exported.start}..{exported.end - 1} proved in checkpoint "
                f"{trusted.size} root {trusted.root_hash.hex()}"
            )
            return
        remembered_path = profile.folder / LOG_CHECKPOINT_FILE
        with _api(home, as_, audit_server) as api:
            # The auditor-only list first: an identity that may not audit learns so before anything else.
            published = list(_pages(api, "/v1/audit/checkpoints", "checkpoints", {}))
            note, latest, findings = _latest(api, log, _remembered(remembered_path, log))
            findings += _check_live(api, log, latest, published)
            cosigned: dict[str, int] = {}
            if witness:
                with _api(home, as_, server) as gateway:
                    directory = gateway.directory(load_pin(profile.folder))
                sizes = sorted((int(item["size"]) for item in published), reverse=True)
                cosigned, missing = _cosigned(api, log, latest, sizes, directory, witness)
                findings += missing
        if findings:
            raise AuditFindings(findings)
        remembered_path.write_text(note)
        typer.echo(
            f"audit log intact: {latest.size} leaves, checkpoint {latest.size} root {latest.root_hash.hex()}"
        )
        for name, size in cosigned.items():
            typer.echo(f"  cosigned by {name} at checkpoint {size}")


@audit_app.command("export")
def audit_export(
    start: Annotated[int, typer.Option(help="The first leaf index.")],
    end: Annotated[int, typer.Option(help="The leaf index after the last.")],
    out: Annotated[Path, typer.Option(help="Where to write the bundle (JSON).")],
    as_: As = "auditor",
    home: Home = DEFAULT_HOME,
    audit_server: AuditServer = DEFAULT_AUDIT,
) -> None:
    """Export leaves [start, end) with the latest checkpoint and their proofs, for `audit verify --bundle`;
    with a consistency proof from the checkpoint this identity remembers, if any."""
    with audit_errors(), _api(home, as_, audit_server) as api:
        profile = Profile(home, as_)
        params: dict[str, Any] = {"start": start, "end": end}
        remembered = _remembered(profile.folder / LOG_CHECKPOINT_FILE, _log_verifier(profile, None))
        if remembered is not None:
            params["from"] = remembered.size
        exported = AuditBundle.model_validate(api.call("GET", "/v1/audit/export", params=params))
        out.write_text(exported.model_dump_json(indent=2))
        typer.echo(f"wrote {len(exported.leaves)} leaves with their proofs to {out}")


@audit_app.command("witness")
def audit_witness(as_: As, home: Home = DEFAULT_HOME, audit_server: AuditServer = DEFAULT_AUDIT) -> None:
    """Cosign the log's latest checkpoint as a witness, once it is proved consistent with the last one
    this agency cosigned; a fork or rollback is refused and reported."""
    with audit_errors(), _api(home, as_, audit_server) as api:
        profile = Profile(home, as_)
        log = _log_verifier(profile, None)
        remembered_path = profile.folder / WITNESS_CHECKPOINT_FILE
        note, latest, findings = _latest(api, log, _remembered(remembered_path, log))
        if findings:
            raise AuditFindings(findings)
        signer = CosignatureSigner(as_, profile.keys().signer(), int(datetime.now(UTC).timestamp()))
        line = signature_line(latest.body(), signer)
        api.call("POST", f"/v1/audit/checkpoints/{latest.size}/cosignatures", json={"line": line})
        remembered_path.write_text(note)
        typer.echo(f"cosigned checkpoint {latest.size} root {latest.root_hash.hex()} as {as_}")


@evidence_app.command("export")
def evidence_export(
    notice_id: str,
    out: Annotated[Path, typer.Option(help="Where to write the bundle (JSON).")],
    checkpoint_size: Annotated[
        int | None,
        typer.Option(
            help="Prove against the checkpoint of this size, e.g. one the witnesses cosigned "
            "(default: the latest, signed on the spot if it does not cover the notice yet)."
        ),
    ] = None,
    as_: As = "auditor",
    home: Home = DEFAULT_HOME,
    audit_server: AuditServer = DEFAULT_AUDIT,
) -> None:
    """Export one notice's evidence: every leaf of it with its inclusion proof in a signed checkpoint,
    the recipients' signed receipts and the directory keys, for `evidence verify` with no network."""
    with one_line_errors(), _api(home, as_, audit_server) as api:
        params = {"size": checkpoint_size} if checkpoint_size is not None else {}
        path = f"/v1/audit/evidence/{_notice_id(notice_id)}"
        bundle = EvidenceBundle.model_validate(api.call("GET", path, params=params))
        out.write_text(bundle.model_dump_json(indent=2) + "\n")
        typer.echo(
            f"wrote the evidence of notice {bundle.notice_id} to {out}: {len(bundle.events)} events, "
            f"{len(bundle.receipts)} receipt(s), checkpoint {bundle.tree_size}"
        )


@evidence_app.command("verify")
def evidence_verify(
    file: Path,
    log_key: LogKey = None,
    as_: As = "auditor",
    home: Home = DEFAULT_HOME,
) -> None:
    """Check an evidence bundle offline, trusting only the log's public key: the checkpoint's signature
    and cosignatures, every leaf and inclusion proof, each receipt against its logged hash and its
    signer's key, and each key against the leaf that registered it. Prints every check; exits 1 naming
    each that fails."""
    with one_line_errors():
        log = _log_verifier(Profile(home, as_), log_key)
        bundle = EvidenceBundle.model_validate_json(file.read_text())
        checks = check_evidence(bundle, log)
        for check in checks:
            typer.echo(f"{'ok  ' if check.ok else 'FAIL'} {check.detail}", err=not check.ok)
        failed = failures(checks)
        if failed:
            raise EvidenceFindings(
                f"the evidence does NOT verify: {len(failed)} of {len(checks)} checks failed"
            )
        typer.echo(
            f"evidence of notice {bundle.notice_id} verified: {len(checks)} checks passed against "
            f"checkpoint {bundle.tree_size} of {bundle.origin}"
        )


@notice_app.command("recall")
def notice_recall(
    notice_id: str,
    as_: As,
    reason: Annotated[str | None, typer.Option(help="Recorded in the audit log.")] = None,
    sign: Sign = False,
    home: Home = DEFAULT_HOME,
    server: Server = DEFAULT_SERVER,
) -> None:
    """Withdraw a notice you sent: unread copies leave the inboxes, read ones are marked recalled."""
    with one_line_errors(), _api(home, as_, server, sign) as api:
        notice_id = _notice_id(notice_id)
        api.call("POST", f"/v1/notices/{notice_id}/recall", json={"reason": reason})
        typer.echo(f"recall of {notice_id} accepted; `deskbridge notice status` shows it applied")


@case_app.command("show")
def case_show(
    case_ref: str, as_: As, sign: Sign = False, home: Home = DEFAULT_HOME, server: Server = DEFAULT_SERVER
) -> None:
    """A case's notices with their replies indented beneath them, and each recipient's state."""
    with one_line_errors(), _api(home, as_, server, sign) as api:
        if not re.fullmatch(CASE_REF_PATTERN, case_ref):
            raise ClientError(f"{case_ref!r} is not a case ref such as KD-2025-0331", "invalid_request")
        thread = api.call("GET", f"/v1/cases/{case_ref}")
        typer.echo(f"case {thread['case_ref']}: {len(thread['notices'])} notice(s)")
        for n in thread["notices"]:
            pad = "  " * (n["depth"] + 1)
            recalled = "  RECALLED" if n.get("recalled_at") else ""
            typer.echo(
                f"{pad}{n['sent_at']}  {n['notice_type']} [{n['priority']}] TLP:{n['tlp'].upper()} "
                f"from {n['sender']}  id {n['notice_id']}{recalled}"
            )
            for r in n["recipients"]:
                typer.echo(f"{pad}  -> {r['agency']:<26} {r['state']}")


@keys_app.command("rotate")
def keys_rotate(
    as_: As,
    overlap: Annotated[
        int, typer.Option(help="Seconds the current keys stay valid, for envelopes already in flight.")
    ] = 300,
    home: Home = DEFAULT_HOME,
    server: Server = DEFAULT_SERVER,
) -> None:
    """Make a new key pair here, register its public halves, and keep the old private keys so notices
    sealed to them still open. The file is rewritten only once the directory has the new keys.

    The registration is signed with the current key (RFC 9421): a bearer credential alone cannot add keys."""
    with one_line_errors():
        profile = Profile(home, as_)
        current = profile.keys()
        rotated = current.rotated()
        with Api(server, auth=RequestSigner(current.signer())) as api:
            # The signing key last: registering it retires the current one, which signs these requests.
            for jwk in reversed(rotated.public_jwks()):
                api.call("POST", "/v1/keys", json={"jwk": jwk, "retire_previous_after_s": overlap})
                typer.echo(f"registered {jwk['use']} key {jwk['kid']}")
        path = rotated.save(profile.folder)
        typer.echo(
            f"keys rotated; previous keys ({current.signing_kid}, {current.encryption_kid}) expire in "
            f"{overlap} s and stay in {path} to open old notices"
        )


@keys_app.command("revoke")
def keys_revoke(
    kid: str,
    as_: As,
    reason: Annotated[str, typer.Option(help="Why, e.g. 'device lost': recorded in the audit log.")],
    home: Home = DEFAULT_HOME,
    server: Server = DEFAULT_SERVER,
) -> None:
    """Revoke one of your agency's keys at once (compromise). The administrator may revoke any key."""
    with one_line_errors(), _api(home, as_, server) as api:
        path = f"/v1/admin/keys/{kid}/revoke" if as_ == "admin" else f"/v1/keys/{kid}/revoke"
        api.call("POST", path, json={"reason": reason})
        typer.echo(f"key {kid} revoked; new envelopes signed with it are refused from now on")


@directory_app.command("pin")
def directory_pin(
    as_: As,
    kid: Annotated[str, typer.Option(help="The directory key's kid, as the desk told you out of band.")],
    home: Home = DEFAULT_HOME,
    server: Server = DEFAULT_SERVER,
) -> None:
    """Pin the desk's directory key after checking its kid; every later directory must be signed by it."""
    with one_line_errors(), _api(home, as_, server) as api:
        served = PublicKey.from_jwk(DIRECTORY_SIGNER, api.call("GET", "/v1/directory/key"))
        if served.kid != kid:
            raise ClientError(f"the server's directory key is {served.kid}, not {kid}: not pinned")
        path = save_pin(Profile(home, as_).folder, served)
        typer.echo(f"pinned directory key {kid} in {path}")


@directory_app.command("show")
def directory_show(as_: As, home: Home = DEFAULT_HOME, server: Server = DEFAULT_SERVER) -> None:
    """The agencies and their keys, from the directory as signed by the pinned key."""
    with one_line_errors(), _api(home, as_, server) as api:
        pinned = load_pin(Profile(home, as_).folder)
        directory = api.directory(pinned)
        signed_at = datetime.fromtimestamp(directory.document.iat, UTC).isoformat()
        typer.echo(f"directory signed at {signed_at} by the pinned key {pinned.kid}")
        for agency in directory.document.agencies:
            typer.echo(f"{agency.id:<28} {agency.kind:<8} {agency.name}")
            for key in agency.keys:
                typer.echo(f"  {key.use} {key.kid} {key.status}")


if __name__ == "__main__":
    app()
