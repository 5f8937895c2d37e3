"""A generated ImageNet-segmentation file for `harness bench-eval --segtest`: N 500x375 images (noise with a
brighter disc, the disc the object) in gtsegs_ijcv.mat's MATLAB v7.3 layout, written by the test fixture's
writer (python/fixtures/segtest.py). A measurement input, not a test fixture.

    python gtsegs.py OUT.mat [N]   # N: 128 by default
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "fixtures"))
from segtest import picture, write_mat  # noqa: E402


def main(out, n):
    write_mat(out, [picture(375, 500, grey=False) for _ in range(n)])


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 128)
