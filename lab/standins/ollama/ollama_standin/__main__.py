"""Lab test fixture: `python3 -m ollama_standin ...` and the zipapp entry point.

Kept separate from cli.py so the zipapp built by package.py and the source
tree start through the same function. From an unpacked release archive, the
embedding runtime it carries (lib/ollama/standin/) is activated first.
"""

import sys

from ollama_standin import vendor

vendor.activate(sys.argv[0])

from ollama_standin.cli import main  # noqa: E402 - after the archive's packages are on sys.path

sys.exit(main(sys.argv[1:]))
