"""`python -m wisp._session.inspect SCRIPT [STUB]`: import a script, print its app spec as JSON.

Runs in a fresh process each time so that `serve` sees the edited code, not cached modules.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from .._runtime._load import LoadError, find_stub, import_script


def main() -> None:
    script = Path(sys.argv[1]).resolve()
    attr = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    # What the script prints while it is imported goes to stderr: stdout carries only the spec.
    sys.stdout.flush()
    spec_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        module = import_script(script.parent, script.stem)
        stub_attr, stub = find_stub(module, attr)
        spec = stub.spec(default_name=script.stem, module=script.stem, stub_attr=stub_attr)
    except LoadError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(2)
    except BaseException:  # the user's script failed at import: show them their traceback
        print(f"Importing {script.name} failed:", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        sys.exit(1)
    sys.stdout.flush()
    spec_out.write(json.dumps(spec.to_dict()))
    spec_out.flush()


if __name__ == "__main__":
    main()
