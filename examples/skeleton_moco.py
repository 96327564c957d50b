"""HaLP skeleton pipeline: MoCo, then MoCo + HaLP pretraining, and the kNN / linear / semi-supervised / transfer
evaluations of the paper (Shah et al., CVPR 2023), on NTU RGB+D 60/120, PKU-MMD II, NW-UCLA, SBU Kinect
Interaction, MSR Action3D, your own skeletons, or a synthetic dataset.

    python examples/skeleton_moco.py            # the whole pipeline on the synthetic data, CPU, minutes
    python examples/skeleton_moco.py --help     # commands, datasets, recipes and every setting

The code is the package next to this file (examples/skeleton/); the recipes are in configs/.
"""

import sys

from skeleton.cli import main

if __name__ == "__main__":
    sys.exit(main())
