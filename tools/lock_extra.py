"""Write requirements-EXTRA.lock: what an optional extra adds on top of requirements.lock.

``python tools/lock_extra.py EXTRA`` resolves the extra's requirements from
``pyproject.toml`` with pip (a dry run, constrained by ``requirements.lock``)
and keeps the packages that the main lock does not already pin. ``make lock``
runs it for every extra.
"""

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(extra: str) -> int:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    if extra not in extras:
        print(f"error: EXTRA: unknown extra {extra!r}; pyproject.toml defines {sorted(extras)}", file=sys.stderr)
        return 2
    main_lock = {norm(l.split("==")[0]) for l in (ROOT / "requirements.lock").read_text().splitlines() if "==" in l}
    with tempfile.TemporaryDirectory() as d:
        report = Path(d) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--dry-run",
                        "--ignore-installed", "--report", str(report), "-c", str(ROOT / "requirements.lock"),
                        *extras[extra]], check=True)
        items = json.loads(report.read_text())["install"]
    pins = sorted({f"{i['metadata']['name']}=={i['metadata']['version']}" for i in items
                   if norm(i["metadata"]["name"]) not in main_lock}, key=str.lower)
    header = (f"# The optional '{extra}' extra ({', '.join(extras[extra])}), on top of requirements.lock.\n"
              f"# Written by `make lock` (tools/lock_extra.py {extra}); `make setup EXTRAS={extra}` installs it.\n")
    (ROOT / f"requirements-{extra}.lock").write_text(header + "\n".join(pins) + "\n")
    print(f"requirements-{extra}.lock: {len(pins)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
