"""The dry run: validate a space and show what a search over it would explore."""

from __future__ import annotations

from search.compile import count_dimensions, sample_policies
from search.strategies import get_strategy
from spaces.schema import load_space


def dry_run(space_name: str, searcher: str, seed: int = 0, samples: int = 3) -> str:
    """A readable summary of the space, the searcher, and a few sampled policies."""
    space = load_space(space_name)
    get_strategy(searcher)
    d, c, p, s = space.dataset, space.child, space.policy, space.search
    base = c.base_augmentation
    lines = [
        f"space {space.name}: {space.description}",
        f"  dataset   {d.name}: train {d.train_size}, validation pool {d.val_pool_size}, "
        f"audit {d.audit_size}; {d.image_size}x{d.image_size}x{d.channels}, "
        f"{d.num_classes} classes",
        f"  child     {c.model} (width {c.width}), {c.epochs} epochs, batch {c.batch_size}, "
        f"{c.optimizer.name} lr {c.optimizer.lr:g}; base: crop={base.crop} flip={base.flip}",
        f"  policy    {p.sub_policies} sub-policies x {p.ops_per_sub_policy} ops, "
        f"probabilities {'searched' if p.search_probability else 'fixed'}",
        f"  ops ({len(p.ops)})  " + ", ".join(
            o.name + ("" if o.magnitude == (0.0, 1.0) else f"[{o.magnitude[0]:g},"
                      f"{o.magnitude[1]:g}]") for o in p.ops),
        "  batch ops " + (", ".join(
            f"{k} in [{v[0]:g}, {v[1]:g}]" for k, v in p.batch_ops.model_dump().items() if v)
            or "none"),
        f"  reward    mean {space.reward.metric} over the last {space.reward.last_epochs} epochs "
        f"on a fresh sample of {space.reward.val_sample_size} per trial",
        f"  search    {searcher}, {s.trials} trials, {s.cpus_per_trial:g} CPU / "
        f"{s.gpus_per_trial:g} GPU per trial",
        f"  dimensions {count_dimensions(space)}",
        "",
        f"{samples} sampled policies (seed {seed}):",
    ]
    for k, policy in enumerate(sample_policies(space, samples, seed)):
        body = policy.describe().replace("\n", "\n      ")
        lines.append(f"  [{k}] {body}")
    lines.append("\ndry run: nothing was trained; drop --dry-run to search.")
    return "\n".join(lines)
