import sys
from pathlib import Path

# The examples are scripts, not part of the installed package: make `import skeleton` work in tests.
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))
