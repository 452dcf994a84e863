"""``--emit megatron|torchtitan``: the best layout in the words of the tool that will run it.

Megatron-LM (``pretrain_gpt.py`` arguments): tensor, pipeline and virtual-pipeline sizes,
micro and global batch, recomputation, sequence parallelism, the distributed optimizer and
the model's shape; the data-parallel size is what the world size leaves. torchtitan: the
``[parallelism]``, ``[training]`` and ``[activation_checkpoint]`` sections of its TOML job
config. What a tool cannot express (a schedule it lacks, an uneven layer split) is said
in a comment line rather than left out silently.
"""

from __future__ import annotations

import schedules

from .layout import Layout
from .transformer import TransformerSpec

__all__ = ["EMITTERS", "megatron_args", "torchtitan_config"]

_ZB_FORK = "sail-sg/zero-bubble-pipeline-parallelism (a Megatron-LM fork)"

_TORCH_SCHEDULES = {"gpipe": "GPipe", "1f1b": "1F1B", "interleaved-1f1b": "Interleaved1F1B", "looped-bfs": "LoopedBFS",
                    "interleaved-zb": "InterleavedZeroBubble", "zbv": "ZBVZeroBubble", "dualpipev": "DualPipeV"}


def _megatron_schedule(layout: Layout, layers: tuple[int, ...]) -> tuple[list[str], list[str]]:
    """(arguments, comments) for the schedule and the layer split."""
    args, notes = [], []
    name, v = layout.schedule, layout.chunks
    if name == "interleaved-1f1b":
        if len(set(layers)) == 1:
            args += ["--num-layers-per-virtual-pipeline-stage", str(layers[0])]
        else:
            args += ["--num-virtual-stages-per-pipeline-rank", str(v)]
    elif schedules.spec(name).costed:
        limit = schedules.spec(name).memory_limit(layout.pp)
        notes.append(f"# {name}: Megatron-LM has no zero-bubble schedule; {_ZB_FORK} takes "
                     f"--enable-zero-bubble --zero-bubble-max-pending-backward {limit}")
    elif name == "zbv":
        notes.append(f"# zbv: Megatron-LM has no V schedule; {_ZB_FORK} takes --zero-bubble-v-schedule")
    elif name != "1f1b":
        notes.append(f"# {name}: not a Megatron-LM schedule (it runs 1F1B, or interleaved 1F1B with virtual stages; "
                     f"--schedules 1f1b,interleaved-1f1b plans for those)")
    if len(set(layers)) > 1:
        middle = layers[1:-1] if v == 1 else ()
        if v == 1 and len(set(middle)) <= 1:
            args += ["--decoder-first-pipeline-num-layers", str(layers[0]),
                     "--decoder-last-pipeline-num-layers", str(layers[-1])]
        else:
            notes.append(f"# layer split {','.join(map(str, layers))}: Megatron-LM splits evenly, "
                         f"with at most the first and last stage different")
    return args, notes


def _model_args(spec: TransformerSpec) -> list[str]:
    args = ["--num-layers", str(spec.layers), "--hidden-size", str(spec.hidden), "--num-attention-heads", str(spec.heads),
            "--seq-length", str(spec.seq), "--max-position-embeddings", str(spec.seq), "--ffn-hidden-size", str(spec.f)]
    if spec.kv != spec.heads:
        args += ["--group-query-attention", "--num-query-groups", str(spec.kv)]
    if spec.mlp == "swiglu":
        args.append("--swiglu")
    if spec.norm == "rmsnorm":
        args += ["--normalization", "RMSNorm"]
    if not spec.bias:
        args.append("--disable-bias-linear")
    if not spec.tied_embeddings:
        args.append("--untie-embeddings-and-output-weights")
    if not spec.learned_positions:
        args += ["--position-embedding-type", "rope"]
    return args


def megatron_args(spec: TransformerSpec, layout: Layout, global_batch: int, layers: tuple[int, ...]) -> str:
    """Megatron-LM launch arguments for ``layout`` (``layers``: its layers per model stage),
    one per line (a shell continuation)."""
    schedule, notes = _megatron_schedule(layout, layers)
    args = ["--tensor-model-parallel-size", str(layout.tp), "--pipeline-model-parallel-size", str(layout.pp),
            *schedule, "--micro-batch-size", str(layout.microbatch_size), "--global-batch-size", str(global_batch)]
    if layout.recompute == "full":
        args += ["--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "1"]
    elif layout.recompute == "selective":
        args += ["--recompute-granularity", "selective"]
    if layout.sequence_parallel:
        args.append("--sequence-parallel")
    if layout.distributed_optimizer:
        args.append("--use-distributed-optimizer")
    args += _model_args(spec) + ["--bf16"]
    pairs, i = [], 0
    while i < len(args):
        takes = i + 1 < len(args) and not args[i + 1].startswith("--")
        pairs.append(f"{args[i]} {args[i + 1]}" if takes else args[i])
        i += 2 if takes else 1
    world = f"# world size {layout.gpus}: tp {layout.tp} x pp {layout.pp} x dp {layout.dp}"
    return "\n".join([world, *notes] + [f"    {p} \\" for p in pairs[:-1]] + [f"    {pairs[-1]}"])


def torchtitan_config(spec: TransformerSpec, layout: Layout, global_batch: int, layers: tuple[int, ...]) -> str:
    """The matching torchtitan TOML sections."""
    lines = []
    schedule = _TORCH_SCHEDULES.get(layout.schedule)
    if layout.distributed_optimizer:
        lines.append("# distributed optimizer: torchtitan shards over data parallelism with FSDP, which shards the "
                     "weights and gradients too (ZeRO-3, more than ZeRO-1's optimizer state)")
    if layout.tp > 1 and not layout.sequence_parallel:
        lines.append("# torchtitan's tensor parallelism always shards norms over the sequence (sequence parallel)")
    lines += ["[parallelism]",
              f"data_parallel_replicate_degree = {1 if layout.distributed_optimizer else layout.dp}",
              f"data_parallel_shard_degree = {layout.dp if layout.distributed_optimizer else 1}",
              f"tensor_parallel_degree = {layout.tp}",
              f"pipeline_parallel_degree = {layout.pp}"]
    if layout.pp > 1:
        if schedule is None:
            lines.append(f"# {layout.schedule} is not a torch.distributed.pipelining schedule: write it with "
                         f"`python -m planner ... --schedule-out best.csv` and load it from there")
            lines += ['pipeline_parallel_schedule = "PipelineScheduleMulti"' if layout.chunks > 1
                      else 'pipeline_parallel_schedule = "PipelineScheduleSingle"',
                      'pipeline_parallel_schedule_csv = "best.csv"']
        else:
            lines.append(f'pipeline_parallel_schedule = "{schedule}"')
        lines.append(f"pipeline_parallel_microbatch_size = {layout.microbatch_size}")
        if len(set(layers)) == 1:
            lines.append(f"pipeline_parallel_layers_per_stage = {layers[0]}")
        else:
            lines.append(f"# layer split {','.join(map(str, layers))}: give it as pipeline_parallel_split_points")
    lines += ["", "[training]", f"local_batch_size = {global_batch // layout.dp}", f"global_batch_size = {global_batch}",
              f"seq_len = {spec.seq}", "", "[activation_checkpoint]", f'mode = "{layout.recompute}"']
    if layout.recompute == "selective":
        lines += ['selective_ac_option = "op"  # torchtitan saves matmul outputs; the planner priced recomputing '
                  'the attention core']
    return "\n".join(lines)


EMITTERS = {"megatron": megatron_args, "torchtitan": torchtitan_config}
