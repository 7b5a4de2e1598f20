"""Regenerate the Python gRPC code in service/gen/ from protos/.

    python -m service.protogen          # write service/gen/
    python -m service.protogen --check  # exit 1 if service/gen/ is stale

The generated files are committed so that installing needs no code generation;
a test runs `--check` so they cannot drift from the .proto.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = Path("npcvoice/v1/npc_voice.proto")
OUT = ROOT / "service" / "gen"
# protoc writes absolute imports of the proto package; ours live inside `service.gen`.
_IMPORT = "from npcvoice.v1 import npc_voice_pb2"


def generate(out: Path) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{ROOT / 'protos'}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            str(ROOT / "protos" / PROTO),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed")
        written = []
        for src in sorted((Path(tmp) / PROTO.parent).iterdir()):
            text = src.read_text().replace(_IMPORT, "from service.gen import npc_voice_pb2")
            dst = out / src.name
            dst.write_text(text)
            written.append(dst)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args()
    if not args.check:
        for path in generate(OUT):
            print(f"wrote {path.relative_to(ROOT)}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            p.name
            for p in generate(Path(tmp))
            if not (OUT / p.name).exists() or (OUT / p.name).read_text() != p.read_text()
        ]
    if stale:
        sys.exit(f"service/gen is stale ({', '.join(stale)}): run python -m service.protogen")
    print("service/gen is up to date")


if __name__ == "__main__":
    main()
