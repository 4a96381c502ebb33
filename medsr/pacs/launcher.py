"""``medsr orthanc serve``: run Debian's Orthanc with the medsr plugin, configured safely.

Writes ``ROOT/orthanc.json`` (owner-only: it may hold a password) with Orthanc's storage
and index under ROOT, the orthanc-python plugin, the medsr plugin script, loopback-only
access unless ``--remote`` (which requires a user and a password file), and then
replaces itself with Orthanc in the foreground (``exec``), so signals and the exit code
are Orthanc's. The embedded interpreter gets this environment's site-packages and the
medsr sources on PYTHONPATH, so numpy/pydicom/torch import inside Orthanc; that only
works when the plugin's libpython has the same major.minor version as this Python,
which is checked first.

Its command line (``medsr orthanc serve|env``) is :mod:`medsr.cli.orthanc`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path

from ..errors import InputError, MedsrError, OutputError

ORTHANC_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc", "/usr/local/sbin/Orthanc", "/usr/local/bin/Orthanc")
PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancPython.so", "/usr/lib/orthanc/plugins/libOrthancPython.so",
                     "/usr/local/share/orthanc/plugins/libOrthancPython.so")
CONFIG_NAME = "orthanc.json"
_USER_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


# --------------------------------------------------------------------------- discovery

def find_orthanc(explicit: str | Path | None = None) -> Path | None:
    """The Orthanc server binary (``--orthanc``, then PATH, then Debian's /usr/sbin/Orthanc)."""
    if explicit:
        p = Path(explicit)
        return p if p.is_file() and os.access(p, os.X_OK) else None
    found = shutil.which("Orthanc")
    if found:
        return Path(found)
    for c in ORTHANC_CANDIDATES:
        if Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    return None


def find_python_plugin(explicit: str | Path | None = None) -> Path | None:
    """orthanc-python's shared library (``--plugin``, $MEDSR_ORTHANC_PYTHON_PLUGIN, Debian's path)."""
    for c in (explicit, os.environ.get("MEDSR_ORTHANC_PYTHON_PLUGIN"), *PLUGIN_CANDIDATES):
        if c and Path(c).is_file():
            return Path(c)
    return None


def plugin_script() -> Path:
    """The thin plugin script Orthanc loads (``PythonScript``)."""
    return Path(__file__).resolve().with_name("orthanc_plugin.py")


def embedded_python_version(plugin: str | Path) -> tuple[int, int] | None:
    """The Python major.minor the orthanc-python library links (its ``libpythonX.Y`` dependency)."""
    try:
        data = Path(plugin).read_bytes()
    except OSError:
        return None
    m = re.search(rb"libpython(\d)\.(\d+)", data)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_python_match(plugin: str | Path) -> tuple[int, int]:
    """Refuse a plugin built for another Python than this one: this venv's packages would not import."""
    embedded = embedded_python_version(plugin)
    here = sys.version_info[:2]
    if embedded is None:
        raise InputError("cannot tell which Python the orthanc-python plugin embeds (no libpythonX.Y found)",
                         path=plugin)
    if embedded != here:
        raise InputError(f"orthanc-python embeds Python {embedded[0]}.{embedded[1]} but medsr runs on "
                         f"{here[0]}.{here[1]}: numpy/torch from this environment cannot import inside Orthanc; "
                         f"use a Python {embedded[0]}.{embedded[1]} virtual environment", path=plugin)
    return embedded


def python_path_entries() -> list[str]:
    """What the embedded interpreter needs on PYTHONPATH: this environment's site-packages + medsr's sources."""
    import medsr

    entries = []
    for key in ("purelib", "platlib"):
        entries.append(sysconfig.get_paths()[key])
    entries.append(str(Path(medsr.__file__).resolve().parents[1]))  # the folder holding the medsr package
    out = []
    for e in entries:
        if e and e not in out:
            out.append(e)
    return out


def orthanc_environment(base: dict | None = None) -> dict:
    """Environment for Orthanc: PYTHONPATH = site-packages + medsr sources (+ what was there)."""
    env = dict(os.environ if base is None else base)
    parts = python_path_entries()
    if env.get("PYTHONPATH"):
        parts += [p for p in env["PYTHONPATH"].split(os.pathsep) if p and p not in parts]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.pop("PYTHONHOME", None)  # would point the embedded interpreter at this venv's stdlib
    return env


# --------------------------------------------------------------------------- config

def build_config(root: str | Path, *, http_port: int = 8042, dicom_port: int = 4242, aet: str = "MEDSR",
                 name: str = "medsr", remote: bool = False, user: str | None = None, password: str | None = None,
                 archive_store: str | Path | None = None, plugin: str | Path | None = None,
                 wait_timeout: float = 120.0, device: str = "auto") -> dict:
    """Orthanc's configuration as a dict. Refuses ``remote`` without a user and a password."""
    root = Path(root).resolve()
    for label, port, low in (("--http-port", http_port, 1), ("--dicom-port", dicom_port, 0)):
        if not isinstance(port, int) or not low <= port <= 65535:
            raise InputError(f"{label} must be {low}..65535, not {port!r}")
    if dicom_port and dicom_port == http_port:
        raise InputError("--http-port and --dicom-port must differ")
    if not re.match(r"^[A-Za-z0-9 _.-]{1,16}$", aet):
        raise InputError(f"--aet {aet!r} is not a valid AE title (1-16 letters, digits, space . _ -)")
    if (user is None) != (password is None):
        raise InputError("give both --user and --password-file, or neither")
    if remote and not user:
        raise InputError("--remote needs --user and --password-file: refusing to expose Orthanc without "
                         "authentication")
    if user is not None and not _USER_RE.match(user):
        raise InputError("--user must be 1-64 letters, digits or . _ @ -")
    if password is not None and (not password or "\n" in password):
        raise InputError("the password file must hold one non-empty line")
    plugin = Path(plugin) if plugin else find_python_plugin()
    if plugin is None:
        raise InputError("orthanc-python is not installed (apt-get install orthanc-python), or pass --plugin")
    store = Path(archive_store).resolve() if archive_store else root / "medsr-archives"
    cfg = {
        "Name": name,
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "HttpPort": http_port,
        "DicomServerEnabled": bool(dicom_port),
        "DicomPort": dicom_port or 4242,
        "DicomAet": aet,
        "RemoteAccessAllowed": bool(remote),
        "AuthenticationEnabled": bool(user),
        "MaximumStorageCacheSize": 0,
        "HttpDescribeErrors": True,
        "Plugins": [str(plugin)],
        "PythonScript": str(plugin_script()),
        "PythonVerbose": False,
        "Medsr": {"ArchiveStore": str(store), "WaitTimeout": float(wait_timeout), "Device": device},
    }
    if user:
        cfg["RegisteredUsers"] = {user: password}
    return cfg


def write_config(root: str | Path, config: dict) -> Path:
    """Create ROOT (owner-only) and write ROOT/orthanc.json with mode 0600."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for key in ("StorageDirectory", "IndexDirectory"):
            Path(config[key]).mkdir(parents=True, exist_ok=True, mode=0o700)
        Path(config["Medsr"]["ArchiveStore"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise OutputError(f"cannot create folders ({e.strerror})", path=root) from None
    path = root / CONFIG_NAME
    tmp = path.with_name(f".{CONFIG_NAME}.tmp")
    try:
        if tmp.exists():
            tmp.unlink()
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            json.dump(config, f, indent=2)
        os.replace(tmp, path)
        os.chmod(path, 0o600)
    except OSError as e:
        raise OutputError(f"cannot write the configuration ({e.strerror})", path=path) from None
    return path


def read_password_file(path: str | Path) -> str:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read the password file ({e.strerror})", path=p) from None
    lines = [l for l in text.splitlines() if l.strip()]
    if len(lines) != 1:
        raise InputError("the password file must hold exactly one non-empty line", path=p)
    return lines[0].strip()


# --------------------------------------------------------------------------- commands

def prepare(args) -> tuple[Path, list[str], dict, dict]:
    """Validate, write the config -> (config path, Orthanc argv, environment, config)."""
    if args.remote and not (args.user and args.password_file):
        raise InputError("--remote needs --user and --password-file: refusing to expose Orthanc without "
                         "authentication")
    orthanc = find_orthanc(args.orthanc)
    if orthanc is None:
        raise InputError("Orthanc is not installed (apt-get install orthanc), or pass --orthanc PATH")
    password = read_password_file(args.password_file) if args.password_file else None
    plugin = Path(args.plugin) if args.plugin else find_python_plugin()
    if plugin is None or not plugin.is_file():
        raise InputError("orthanc-python is not installed (apt-get install orthanc-python), or pass --plugin PATH")
    if not args.skip_python_check:
        check_python_match(plugin)
    cfg = build_config(args.root, http_port=args.http_port, dicom_port=args.dicom_port, aet=args.aet,
                       remote=args.remote, user=args.user, password=password, archive_store=args.archive_store,
                       plugin=plugin, wait_timeout=args.wait_timeout, device=args.device)
    path = write_config(args.root, cfg)
    argv = [str(orthanc), str(path)] + (["--verbose"] if args.debug else [])
    return path, argv, orthanc_environment(), cfg


def cmd_serve(args) -> int:
    path, argv, env, cfg = prepare(args)
    where = "all interfaces (authentication on)" if cfg["RemoteAccessAllowed"] else "this machine only"
    summary = {"config": str(path), "command": argv, "PYTHONPATH": env["PYTHONPATH"],
               "http": f"http://127.0.0.1:{cfg['HttpPort']}/", "access": where,
               "dicom": f"{cfg['DicomAet']}@{cfg['DicomPort']}" if cfg["DicomServerEnabled"] else "disabled",
               "archive_store": cfg["Medsr"]["ArchiveStore"]}
    if args.dry_run:
        if args.json:
            print(json.dumps(summary))
        else:
            print("\n".join(f"{k:>14}: {v}" for k, v in summary.items()))
        return 0
    if not args.quiet:
        print(f"medsr: starting Orthanc on {summary['http']} ({where}); DICOM {summary['dicom']}; "
              f"archives in {summary['archive_store']}; config {path}", file=sys.stderr, flush=True)
    try:
        # argv[0] is the absolute path find_orthanc() resolved; a list, no shell (docs/guarantees.md)
        os.execve(argv[0], argv, env)  # nosec B606
    except OSError as e:
        raise MedsrError(f"cannot start Orthanc ({e.strerror})", path=argv[0]) from None
    return 1  # not reached


def cmd_env(args) -> int:
    """Print what an existing Orthanc needs to load the plugin (config keys + PYTHONPATH)."""
    plugin = find_python_plugin(args.plugin)
    embedded = embedded_python_version(plugin) if plugin else None
    d = {"PythonScript": str(plugin_script()), "Plugins": [str(plugin)] if plugin else [],
         "PYTHONPATH": os.pathsep.join(python_path_entries()),
         "embedded_python": ".".join(map(str, embedded)) if embedded else None,
         "this_python": ".".join(map(str, sys.version_info[:3])),
         "python_match": embedded == sys.version_info[:2]}
    if args.json:
        print(json.dumps(d))
    else:
        print("\n".join(f"{k:>16}: {v}" for k, v in d.items()))
    return 0 if d["python_match"] else 3
