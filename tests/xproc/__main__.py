"""Run one worker role: ``python -m xproc MODULE.FUNCTION JSON``; print its result as JSON."""
import importlib
import json
import sys


def main(role: str, params: str) -> None:
    module, function = role.rsplit(".", 1)
    result = getattr(importlib.import_module(f"xproc.{module}"), function)(json.loads(params))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
