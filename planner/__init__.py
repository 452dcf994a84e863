"""Plan training of a real transformer on a real cluster: tensor, pipeline and data parallelism.

    python -m planner --model gpt3-175b --gpu a100-80gb --gpus 1024 --gpus-per-node 8 --global-batch 1536

From a :class:`TransformerSpec` (FLOPs, parameters, activation bytes) and a
:class:`Machine` (GPU, links), the search enumerates tp x pp x dp x schedule x chunks x
microbatches x layer split x recomputation x sequence parallelism, prices every op of a
layer on the GPU (:mod:`planner.ops`), rejects layouts whose memory exceeds the cap, ranks
the rest by a closed form and simulates the best with :mod:`simulator`. With ``--profile
costs.json`` (:mod:`planner.profiled`) the costs are measured by ``python -m executor
profile`` instead, and ``--verify K`` runs the best layouts for real.
"""

from .hardware import GPUS, LINKS, Gpu, Link
from .layout import Layout, Machine, stage_costs, stage_layers
from .memory import RankMemory, rank_memory
from .presets import MODELS
from .profiled import ProfilePlanConfig, plan_profiled
from .search import Candidate, Plan, plan
from .space import PlanConfig, enumerate_layouts
from .transformer import TransformerSpec

__all__ = [
    "TransformerSpec", "MODELS", "Gpu", "Link", "GPUS", "LINKS",
    "Layout", "Machine", "stage_costs", "stage_layers", "RankMemory", "rank_memory",
    "PlanConfig", "Candidate", "Plan", "enumerate_layouts", "plan", "ProfilePlanConfig", "plan_profiled",
]
