"""Lab test fixture: `python3 -m ollama_standin ...` and the zipapp entry point.

Kept separate from cli.py so the zipapp built by package.py and the source
tree start through the same function.
"""

import sys

from ollama_standin.cli import main

sys.exit(main(sys.argv[1:]))
