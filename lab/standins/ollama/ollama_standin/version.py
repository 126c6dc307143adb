"""Lab test fixture: the Ollama version this stand-in impersonates.

package.py rewrites the VERSION line inside the zipapp it builds, so the
archive for release X reports X exactly like upstream's binary would. The
stand-in marker lives in MARKER (CLI output, X-Lab-Standin header) rather than
in VERSION, because clients parse the version string.
"""

VERSION = "0.14.2"
MARKER = "QueryGPT lab stand-in, not Ollama"
