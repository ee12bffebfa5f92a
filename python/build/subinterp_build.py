"""PEP 517 build backend for the `subinterp` Python package.

`build_wheel` runs `swift build -c release` for the SubinterpPython product (the library and the
executor, not the server) with the Swift runtime linked statically and only `PyInit__core`
exported, and packs the result as `subinterp/_core<EXT_SUFFIX>` beside python/subinterp/*.py. The
wheel needs no Swift installation to run. `build_sdist` packs what `build_wheel` needs.

Settings (environment): SUBINTERP_SWIFT (the swift executable; default: `swift` on PATH, then
/opt/swift/usr/bin/swift), SUBINTERP_BUILD_DIR (SwiftPM's scratch path; default: .build-python
in the source tree, reused between builds).
"""

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "python", "subinterp")
PRODUCT = "SubinterpPython"


class BuildError(Exception):
    pass


def _project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        return tomllib.load(file)["project"]


def _say(message):
    print(f"subinterp build: {message}", file=sys.stderr, flush=True)


def _swift():
    for candidate in (os.environ.get("SUBINTERP_SWIFT"), shutil.which("swift"), "/opt/swift/usr/bin/swift"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise BuildError(
        "building subinterp from source needs the Swift toolchain (Swift 6): put `swift` on PATH or "
        "set SUBINTERP_SWIFT; or install a wheel built elsewhere (`pip wheel .` on a machine with Swift)")


def _build_library():
    """Runs SwiftPM; returns the path of the built shared library."""
    swift = _swift()
    scratch = os.environ.get("SUBINTERP_BUILD_DIR") or os.path.join(ROOT, ".build-python")
    command = [
        swift, "build", "-c", "release", "--product", PRODUCT, "--scratch-path", scratch,
        # The Swift runtime and Foundation go into the library, so the wheel runs without Swift.
        "-Xswiftc", "-static-stdlib",
        "-Xlinker", f"--version-script={os.path.join(ROOT, 'python', 'build', 'exports.map')}",
        "-Xlinker", "--strip-debug",
    ]
    _say(" ".join(command))
    # SwiftPM's progress goes to stderr, where pip shows it with -v.
    result = subprocess.run(command, cwd=ROOT, stdout=sys.stderr, stderr=sys.stderr)
    if result.returncode != 0:
        raise BuildError(f"swift build failed (exit status {result.returncode}); its output is above")
    library = os.path.join(scratch, "release", f"lib{PRODUCT}.so")
    if not os.path.isfile(library):
        raise BuildError(f"swift build succeeded but {library} is missing")
    return library


def _wheel_tag():
    implementation = sys.implementation.name
    if implementation != "cpython" or sys.version_info[:2] not in ((3, 12), (3, 13)):
        raise BuildError(f"subinterp supports CPython 3.12 and 3.13, not {implementation} {sys.version.split()[0]}")
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        raise BuildError("subinterp needs a default (GIL) build of CPython, not a free-threaded one")
    python = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{python}-{python}-{platform}"


def _metadata(project):
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project['description']}",
        f"Requires-Python: {project['requires-python']}",
    ]
    lines += [f"Classifier: {c}" for c in project.get("classifiers", [])]
    readme = project.get("readme")
    body = ""
    if readme:
        lines.append("Description-Content-Type: text/markdown")
        with open(os.path.join(ROOT, readme), encoding="utf-8") as file:
            body = file.read()
    return "\n".join(lines) + "\n\n" + body


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _sources():
    for name in sorted(os.listdir(PACKAGE)):
        if name.endswith(".py"):
            yield name


# --------------------------------------------------------------------------- PEP 517 hooks

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def _dist_info(project):
    return f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    project = _project()
    _wheel_tag()  # refuse an unsupported Python before anything is built
    directory = os.path.join(metadata_directory, _dist_info(project))
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "METADATA"), "w", encoding="utf-8") as file:
        file.write(_metadata(project))
    return _dist_info(project)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = _project()
    tag = _wheel_tag()
    library = _build_library()
    distribution = project["name"].replace("-", "_")
    dist_info = _dist_info(project)
    wheel_name = f"{distribution}-{project['version']}-{tag}.whl"
    files = []
    for name in _sources():
        with open(os.path.join(PACKAGE, name), "rb") as file:
            files.append((f"subinterp/{name}", file.read()))
    with open(library, "rb") as file:
        files.append((f"subinterp/_core{sysconfig.get_config_var('EXT_SUFFIX')}", file.read()))
    files.append((f"{dist_info}/METADATA", _metadata(project).encode()))
    files.append((f"{dist_info}/WHEEL", (
        "Wheel-Version: 1.0\nGenerator: subinterp_build\nRoot-Is-Purelib: false\n"
        f"Tag: {tag}\n").encode()))
    record = [_record_line(name, data) for name, data in files] + [f"{dist_info}/RECORD,,"]
    files.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    os.makedirs(wheel_directory, exist_ok=True)
    path = os.path.join(wheel_directory, wheel_name)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible
            info.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    _say(f"wrote {path}")
    return wheel_name


def build_sdist(sdist_directory, config_settings=None):
    project = _project()
    base = f"{project['name']}-{project['version']}"
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        raise BuildError("build_sdist works from a git checkout (it packs the files git tracks)")
    # Package.swift declares the test target too, so its folder must exist for SwiftPM.
    wanted = ("Package.swift", "pyproject.toml", "README.md", "Sources/", "python/", "Tests/SubinterpretersTests/")
    names = [n for n in listed.stdout.splitlines() if n.startswith(wanted)]
    os.makedirs(sdist_directory, exist_ok=True)
    path = os.path.join(sdist_directory, f"{base}.tar.gz")
    with tarfile.open(path, "w:gz") as archive:
        for name in names:
            archive.add(os.path.join(ROOT, name), arcname=f"{base}/{name}")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = _metadata(project).encode()
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return os.path.basename(path)
