"""Two real Keystones (PyPI ``keystone``), one per cloud: ``src`` and ``dst``.

Each is one gunicorn serving ``keystone.wsgi.api:application`` on 127.0.0.1, fernet tokens,
its own PostgreSQL database, config in ``$HARNESS_DIR/keystone-<cloud>/``.  Its database is copied
from a PostgreSQL template made once by ``keystone-manage db_sync`` and ``bootstrap`` (admin user,
admin project, region RegionOne, identity endpoints); every real start then fills the cloud in
through the REST API (:func:`populate`):

==========================  =========================================================
``<cloud>-admin``           the admin project (bootstrap); user ``admin``, role admin
``<cloud>-team``            a second project (``--project-map`` by NAME); admin is admin there too
``service``                 service users ``glance`` (glance's authtoken, glance_store's Swift
                            access) and ``swift`` (the proxy's authtoken): roles admin, service
``alice``                   a non-admin user: member of ``<cloud>-team``
application credential      ``harness`` of user admin on the admin project
catalog                     ``identity``; ``image`` → the cloud's keystone-guarded glance
                            (``ks-src``/``ks-dst``); on dst ``object-store`` → Swift
unified limits              where that glance enforces them (``ks-dst``): the four limits
                            glance reads, registered for its image service at
                            :data:`REGISTERED_LIMITS` (high: nothing else notices), and the
                            glance user granted ``reader`` on the system scope (oslo.limit
                            reads limits system-scoped)
==========================  =========================================================

A test that wants a tight quota creates a project of its own and a project limit for it
(``/v3/limits`` overrides the registered default for that project only).

Project ids are Keystone's own (random) and differ between the clouds; names differ too.
Everything a client needs is returned by :func:`populate` and lands in ``env.json`` and
``clouds.yaml``.  Passwords are fixed test values for loopback servers, like the S3 keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import ceph
import postgres
from glanceconf import (
    GLANCE_SERVICE_PASSWORD,
    GLANCE_SERVICE_USER,
    HOST,
    REGION,
    RGW_REGION,
    HarnessError,
    KeystoneSpec,
    Settings,
)
from procs import Check, child_env, http_json, spawn, tail

# keystone and swift share one venv (measured: they install together, `pip check` clean).
CLOUD_VENV = "venv-cloud"
CLOUD_PACKAGES = ("keystone==30.0.0", "swift==2.38.3", "keystonemiddleware", "gunicorn", "psycopg2-binary")
SWIFT_SERVICE_USER, SWIFT_SERVICE_PASSWORD = "swift", "swift-service-pw"
APP_CRED_NAME = "harness"
PASSWORD_HASH_ROUNDS = 4
# All four must be registered: oslo.limit takes a missing one as a limit of 0 and glance then
# refuses every upload (seen on glance 33 + oslo.limit 2.12).  Sizes in MiB, as glance counts them.
REGISTERED_LIMITS = {
    "image_size_total": 1024 * 1024,
    "image_stage_total": 1024 * 1024,
    "image_count_total": 100_000,
    "image_count_uploading": 1000,
}
SERVICE_USERS = ((GLANCE_SERVICE_USER, GLANCE_SERVICE_PASSWORD), (SWIFT_SERVICE_USER, SWIFT_SERVICE_PASSWORD))


def admin_password(ks: KeystoneSpec) -> str:
    """The bootstrap admin's password in this cloud."""
    return f"admin-{ks.name}-pw"


def alice_password(ks: KeystoneSpec) -> str:
    """The non-admin user's password in this cloud."""
    return f"alice-{ks.name}-pw"


def app_cred_secret(ks: KeystoneSpec) -> str:
    """The secret of admin's application credential (chosen, so it is known before creation)."""
    return f"appcred-{ks.name}-secret"


def image_instance(ks: KeystoneSpec) -> str:
    """The glance instance this Keystone guards and lists as its ``image`` endpoint."""
    return f"ks-{ks.name}"


# ----------------------------------------------------------------------------- files


def root(cfg: Settings, ks: KeystoneSpec) -> Path:
    """This Keystone's folder in the harness dir."""
    return cfg.path(f"keystone-{ks.name}")


def keystone_conf(cfg: Settings, ks: KeystoneSpec) -> str:
    """``keystone.conf``: PostgreSQL, fernet tokens with a configurable lifetime, an in-process cache."""
    home = root(cfg, ks)
    return f"""\
[DEFAULT]
debug = false

[database]
connection = {postgres.url(cfg, ks.database)}

[token]
provider = fernet
expiration = {ks.token_expiration}

[fernet_tokens]
key_repository = {home / "fernet-keys"}

[fernet_receipts]
key_repository = {home / "fernet-keys"}

[credential]
key_repository = {home / "credential-keys"}

[identity]
# bcrypt's minimum cost: the default (12) made every password login cost about 0.3 s of CPU.
password_hash_rounds = {PASSWORD_HASH_ROUNDS}

[cache]
# In-process cache (one gunicorn worker): without it every validation ran dozens of role queries
# (about 1 s per glance request under load). A revocation invalidates the token cache at once.
enabled = true
backend = oslo_cache.dict
"""


def _fernet_keys(folder: Path) -> None:
    """What ``keystone-manage fernet_setup`` writes (key 0 staged, 1 primary), without its 2 s start-up."""
    folder.mkdir(mode=0o700)
    for index in ("0", "1"):
        (folder / index).write_bytes(base64.urlsafe_b64encode(os.urandom(32)))
        (folder / index).chmod(0o600)


def prepare(cfg: Settings, ks: KeystoneSpec) -> None:
    """Wipe and recreate the Keystone's folder: config and key repositories."""
    home = root(cfg, ks)
    if home.exists():
        shutil.rmtree(home)
    (home / "etc").mkdir(parents=True)
    (home / "etc" / "keystone.conf").write_text(keystone_conf(cfg, ks))
    _fernet_keys(home / "fernet-keys")
    _fernet_keys(home / "credential-keys")


def _bootstrap_args(ks: KeystoneSpec) -> list[str]:
    """``keystone-manage bootstrap`` arguments: admin user and project, region, identity endpoints."""
    url = ks.auth_url
    args = ["bootstrap", "--bootstrap-username", "admin", "--bootstrap-password", admin_password(ks)]
    args += ["--bootstrap-project-name", f"{ks.name}-admin", "--bootstrap-region-id", REGION]
    return [*args, "--bootstrap-public-url", url, "--bootstrap-internal-url", url, "--bootstrap-admin-url", url]


def template_name(ks: KeystoneSpec) -> str:
    """The PostgreSQL template holding this Keystone's schema + bootstrap (changes with either)."""
    blob = json.dumps([CLOUD_PACKAGES, _bootstrap_args(ks), PASSWORD_HASH_ROUNDS]).encode()
    return f"tpl_keystone_{ks.name}_{hashlib.sha256(blob).hexdigest()[:10]}"


def fill_template(cfg: Settings, ks: KeystoneSpec, database: str, log: Path) -> subprocess.Popen[bytes]:
    """Run ``db_sync`` then ``bootstrap`` into ``database`` (one shell, side by side with others)."""
    conf = cfg.path("templates", f"{database}.conf")
    keys = cfg.path("templates", f"{database}-keys")  # bootstrap insists on a key repository
    if keys.exists():
        shutil.rmtree(keys)
    keys.parent.mkdir(exist_ok=True)
    _fernet_keys(keys)
    conf.write_text(
        f"[database]\nconnection = {postgres.url(cfg, database)}\n"
        f"[identity]\npassword_hash_rounds = {PASSWORD_HASH_ROUNDS}\n"
        f"[fernet_tokens]\nkey_repository = {keys}\n[fernet_receipts]\nkey_repository = {keys}\n"
        f"[credential]\nkey_repository = {keys}\n"
    )
    manage = [str(cfg.path(CLOUD_VENV, "bin", "keystone-manage")), "--config-file", str(conf)]
    script = f"{shlex.join([*manage, 'db_sync'])} && {shlex.join(manage + _bootstrap_args(ks))}"
    with open(log, "wb") as out:
        return subprocess.Popen(
            ["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=child_env()
        )


# keystone's WSGI module parses sys.argv with oslo.config, which refuses gunicorn's arguments:
# a shim (written into the Keystone's etc/, NOT harness/, whose keystone.py would shadow the
# keystone package) empties argv first.
WSGI_SHIM = """\
import sys

sys.argv = sys.argv[:1]
from keystone.wsgi.api import application  # noqa: E402
"""


def start(cfg: Settings, ks: KeystoneSpec) -> Check:
    """Start the Keystone under gunicorn; returns its readiness check."""
    log = cfg.path("logs", f"keystone-{ks.name}.log")
    log.unlink(missing_ok=True)
    etc = root(cfg, ks) / "etc"
    (etc / "harness_keystone_wsgi.py").write_text(WSGI_SHIM)
    cmd = [str(cfg.path(CLOUD_VENV, "bin", "gunicorn")), "--bind", f"{HOST}:{ks.port}", "--no-control-socket"]
    cmd += ["--workers", "1", "--threads", "8", "--timeout", "120", "--graceful-timeout", "5"]
    cmd += ["--access-logfile", "-", "--name", f"keystone-{ks.name}", "--pythonpath", str(etc)]
    cmd += ["harness_keystone_wsgi:application"]
    env = child_env({"OS_KEYSTONE_CONFIG_DIR": str(etc)})
    proc = spawn(cmd, log, cfg.path("run", f"keystone-{ks.name}.pid"), env)
    return (f"{ks.auth_url}", log, proc)


def pidfile(cfg: Settings, ks: KeystoneSpec) -> Path:
    """Where :func:`start` records the gunicorn master's pid."""
    return cfg.path("run", f"keystone-{ks.name}.pid")


# ----------------------------------------------------------------------------- the cloud's content


class _Api:
    """A few Keystone v3 admin calls with one project-scoped admin token (urllib)."""

    def __init__(self, ks: KeystoneSpec, log: Path) -> None:
        self.ks, self.log = ks, log
        self.token = password_token(ks, "admin", admin_password(ks), f"{ks.name}-admin")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        status, _, data = http_json(method, self.ks.auth_url + path, body, {"X-Auth-Token": self.token})
        if status >= 300:
            raise HarnessError(f"keystone {self.ks.name}: {method} {path} -> {status}: {data}\n{tail(self.log)}")
        return data

    def create(self, kind: str, **attrs: Any) -> str:
        """POST /v3/<kind>s; the new id."""
        return str(self.call("POST", f"/{kind}s", {kind: attrs})[kind]["id"])

    def grant(self, project: str, user: str, role: str) -> None:
        """Give ``user`` ``role`` on ``project``."""
        self.call("PUT", f"/projects/{project}/users/{user}/roles/{role}")


def password_token(ks: KeystoneSpec, user: str, password: str, project: str) -> str:
    """A project-scoped token for ``user`` (all in domain Default)."""
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}},
            },
            "scope": {"project": {"name": project, "domain": {"id": "default"}}},
        }
    }
    status, headers, data = http_json("POST", f"{ks.auth_url}/auth/tokens", body)
    if status != 201:
        raise HarnessError(f"keystone {ks.name}: no token for {user}: {status} {data}")
    return str(headers["X-Subject-Token"])


def populate(cfg: Settings, ks: KeystoneSpec) -> dict[str, Any]:
    """Fill a bootstrapped Keystone (see the module docstring); returns its ids for env.json."""
    api = _Api(ks, cfg.path("logs", f"keystone-{ks.name}.log"))
    roles = {r["name"]: r["id"] for r in api.call("GET", "/roles")["roles"]}
    if "service" not in roles:  # keystone >= 2024.1's bootstrap creates it
        roles["service"] = api.create("role", name="service")
    admin_project = api.call("GET", f"/projects?name={ks.name}-admin")["projects"][0]["id"]
    admin_user = api.call("GET", "/users?name=admin")["users"][0]["id"]
    service = api.create("project", name="service", domain_id="default", description="service users")
    team = api.create("project", name=f"{ks.name}-team", domain_id="default", description="a second project")
    api.grant(team, admin_user, roles["admin"])
    users = {}
    for name, password in SERVICE_USERS:
        users[name] = api.create("user", name=name, password=password, domain_id="default", default_project_id=service)
        api.grant(service, users[name], roles["admin"])
        api.grant(service, users[name], roles["service"])
    alice = api.create("user", name="alice", password=alice_password(ks), domain_id="default", default_project_id=team)
    api.grant(team, alice, roles["member"])
    image_service = _catalog(cfg, ks, api)
    limits = _unified_limits(cfg, ks, api, image_service, users[GLANCE_SERVICE_USER], roles["reader"])
    cred = {"name": APP_CRED_NAME, "secret": app_cred_secret(ks), "description": "harness admin"}
    app_cred = api.call("POST", f"/users/{admin_user}/application_credentials", {"application_credential": cred})
    return {
        "name": ks.name,
        "url": ks.url,
        "auth_url": ks.auth_url,
        "port": ks.port,
        "region": REGION,
        "token_expiration": ks.token_expiration,
        "database": ks.database,
        "log": str(cfg.path("logs", f"keystone-{ks.name}.log")),
        "admin": {
            "user_id": admin_user,
            "password": admin_password(ks),
            "project_id": admin_project,
            "project_name": f"{ks.name}-admin",
        },
        "team": {"project_id": team, "project_name": f"{ks.name}-team"},
        "service_project_id": service,
        "alice": {"user_id": alice, "password": alice_password(ks), "project_id": team},
        "service_users": users,
        "app_cred": {"id": app_cred["application_credential"]["id"], "secret": app_cred_secret(ks)},
        "clouds": cloud_names(ks),
        "limits": limits,
    }


def _catalog(cfg: Settings, ks: KeystoneSpec, api: _Api) -> str:
    """``image`` → the cloud's keystone-guarded glance; on dst ``object-store`` → Swift, and
    (``--rgw-swift``) ``object-store`` of region ``RGW_REGION`` → RGW's Swift API.  Returns the
    image service's id."""
    glance = next(i for i in cfg.instances if i.name == image_instance(ks))
    entries = [("glance", "image", glance.url, REGION)]
    if ks.name == "dst" and cfg.swift is not None:
        entries.append(("swift", "object-store", f"{cfg.swift.url}/v1/AUTH_$(project_id)s", REGION))
    if ks.name == "dst" and cfg.ceph is not None and cfg.ceph.rgw_swift:
        api.create("region", id=RGW_REGION, description="RGW's Swift API")
        entries.append(("rgw", "object-store", ceph.swift_url(cfg), RGW_REGION))
    ids = {}
    for name, kind, url, region in entries:
        service = api.create("service", name=name, type=kind)
        ids.setdefault(kind, service)
        for interface in ("public", "internal", "admin"):
            api.create("endpoint", service_id=service, interface=interface, url=url, region_id=region)
    return ids["image"]


def _unified_limits(cfg: Settings, ks: KeystoneSpec, api: _Api, service: str, glance_user: str, reader: str) -> Any:
    """Register glance's four limits when this cloud's glance enforces them; None when it does not."""
    glance = next(i for i in cfg.instances if i.name == image_instance(ks))
    if not glance.keystone_limits:
        return None
    api.call("PUT", f"/system/users/{glance_user}/roles/{reader}")
    registered = [
        {"service_id": service, "region_id": REGION, "resource_name": name, "default_limit": value}
        for name, value in REGISTERED_LIMITS.items()
    ]
    api.call("POST", "/registered_limits", {"registered_limits": registered})
    return {"service_id": service, "region_id": REGION, "registered": dict(REGISTERED_LIMITS)}


# ----------------------------------------------------------------------------- clients


def cloud_names(ks: KeystoneSpec) -> dict[str, str]:
    """clouds.yaml names for this Keystone: admin by password, admin by app credential, alice."""
    base = f"harness-ks-{ks.name}"
    return {"admin": base, "appcred": f"{base}-appcred", "alice": f"{base}-alice"}


def clouds_entries(identity: dict[str, Any]) -> list[str]:
    """clouds.yaml lines for one populated Keystone (see :func:`cloud_names`)."""
    names, auth_url = identity["clouds"], identity["auth_url"]
    common = [f"    region_name: {identity['region']}", "    interface: public", "    identity_api_version: 3"]

    def password(cloud: str, user: str, pw: str, project: str) -> list[str]:
        return [
            f"  {cloud}:",
            "    auth_type: password",
            "    auth:",
            f"      auth_url: {auth_url}",
            f"      username: {user}",
            f"      password: {pw}",
            f"      project_name: {project}",
            "      user_domain_name: Default",
            "      project_domain_name: Default",
            *common,
        ]

    lines = password(names["admin"], "admin", identity["admin"]["password"], identity["admin"]["project_name"])
    lines += password(names["alice"], "alice", identity["alice"]["password"], identity["team"]["project_name"])
    lines += [
        f"  {names['appcred']}:",
        "    auth_type: v3applicationcredential",
        "    auth:",
        f"      auth_url: {auth_url}",
        f"      application_credential_id: {identity['app_cred']['id']}",
        f"      application_credential_secret: {identity['app_cred']['secret']}",
        *common,
    ]
    return lines


def env_lines(identity: dict[str, Any]) -> list[str]:
    """env.sh lines for one populated Keystone."""
    up = f"HARNESS_KEYSTONE_{identity['name'].upper()}"
    return [
        f"export {up}_URL={identity['auth_url']}",
        f"export {up}_ADMIN_PROJECT_ID={identity['admin']['project_id']}",
        f"export {up}_TEAM_PROJECT_ID={identity['team']['project_id']}",
        f"export {up}_TEAM_PROJECT_NAME={identity['team']['project_name']}",
    ]
