import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import robustvit_ops  # noqa: E402

robustvit_ops.load()
