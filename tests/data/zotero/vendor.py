"""Copy Zotero's schema files into this folder, so that tests/zotero_library.py builds databases from Zotero's own
schema without Zotero. Run with the Zotero and zotero-schema repositories as bare mirrors:

    python tests/data/zotero/vendor.py /work/.mirror/zotero+zotero/repo /work/.mirror/zotero+zotero-schema/repo

The SQL files are copied verbatim; of schema.json only what ``Zotero.Schema._updateGlobalSchema()`` reads to fill a
new database (``version``, ``itemTypes``, ``meta``) is kept: the rest is CSL mappings and locales (390 kB).
"""

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# release folder: (Zotero ref, zotero-schema commit that ref pins or, where that commit is not available, the
# nearest one that is)
RELEASES = {
    "7.0": ("7.0.32", "7f04bb5a6c0c8acfb070849cec81775d1ac25947"),
    "head": ("f2a42bec150fa8b947ffde57afd72a22e805f085", "5eedf4402ea6e7393eaf16902b63f572f48707a7"),
}
SQL = ("system", "userdata", "triggers")


def show(repo: Path, ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"{ref}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def main(zotero: Path, schema: Path) -> None:
    for folder, (ref, schema_commit) in RELEASES.items():
        out = HERE / folder
        out.mkdir(exist_ok=True)
        for name in SQL:
            (out / f"{name}.sql").write_text(show(zotero, ref, f"resource/schema/{name}.sql"))
        data = json.loads(show(schema, schema_commit, "schema.json"))
        kept = {key: data[key] for key in ("version", "itemTypes", "meta")}
        (out / "schema.json").write_text(json.dumps(kept, indent=1, ensure_ascii=False) + "\n")
        print(folder, ref[:10], "schema", schema_commit[:8], "version", data["version"])


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
