"""The dry run: a checked search request, summarised; nothing is created or started."""

from __future__ import annotations

from typing import Any

from search.prepare.checks import Prepared
from search.rewards import reward_kind
from search.trials.compile import count_dimensions, sample_policies
from spaces.families import family_of
from spaces.schema import Space


def dry_run(prepared: Prepared, samples: int = 3) -> str:
    """A readable summary of the space, the data, the searcher, and a few sampled policies.

    `prepared` has passed every check a real search makes before it starts (flags, space,
    data, resources, output directory, tracking URI).
    """
    space, opts, splits = prepared.space, prepared.opts, prepared.splits
    searcher, seed = prepared.strategy.name, opts.seed or 0
    d, c, p, s = space.dataset, space.child, space.policy, space.search
    base = c.base_augmentation
    lines = [
        f"space {space.name}: {space.description}",
        f"  dataset   {d.name}: train {d.train_size}, validation pool {d.val_pool_size}, "
        f"audit {d.audit_size}; {d.image_size}x{d.image_size}x{d.channels}, "
        f"{d.num_classes} classes",
        f"  data      {opts.data or d.path or d.name}: {len(splits.train)} train, "
        f"{len(splits.val_pool)} validation pool, {len(splits.audit)} audit, "
        f"{len(splits.test)} test images (checked)"
        + (" (resized: dataset.resize)" if d.resize else ""),
        f"  child     {c.model} (width {c.width}), {c.epochs} epochs, batch {c.batch_size}, "
        f"{c.optimizer.name} lr {c.optimizer.lr:g}; base: crop={base.crop} flip={base.flip}",
        f"  policy    {family_of(space).describe(space)}",
        f"  ops ({len(p.ops)})  " + ", ".join(
            o.name + ("" if o.magnitude == (0.0, 1.0) else f"[{o.magnitude[0]:g},"
                      f"{o.magnitude[1]:g}]") for o in p.ops),
        "  batch ops " + (", ".join(
            f"{k} in [{v[0]:g}, {v[1]:g}]" for k, v in p.batch_ops.model_dump().items() if v)
            or "none"),
        *reward_kind(space).summary_lines(space),
        f"  arms      {references_text(space, prepared.strategy.population_based)}",
        f"  headroom  {headroom_text(space, opts)}",
        f"  confirm   {confirm_text(space)}",
        f"  search    {searcher}, {s.trials} trials, {s.cpus_per_trial:g} CPU / "
        f"{s.gpus_per_trial:g} GPU per trial"
        + (f", {s.cohort} children per cohort trial" if s.cohort > 1 else "")
        + (f", {s.concurrency} at once" if s.concurrency else "")
        + (f", early stop {opts.early_stop}" if opts.early_stop else "")
        + (", resumed" if opts.resume else ""),
        f"  ray       {opts.address or 'a local Ray (started by the search)'}",
        f"  output    {prepared.output}",
        f"  tracking  {opts.tracking_uri or 'SQLite in the output directory'}, experiment "
        f"{opts.experiment or 'augsearch-' + space.name}",
        f"  dimensions {count_dimensions(space)}",
        "",
        f"{samples} sampled policies (seed {seed}):",
    ]
    for k, policy in enumerate(sample_policies(space, samples, seed)):
        body = policy.describe().replace("\n", "\n      ")
        lines.append(f"  [{k}] {body}")
    lines.append("\ndry run: nothing was created or trained; drop --dry-run to search.")
    return "\n".join(lines)


def references_text(space: Space, population_based: bool) -> str:
    """The reference arms the search opens with."""
    from search.trials.references import reference_policies

    names = list(reference_policies(space))
    if population_based:
        return "base (crop/flip) as one member of the starting population"
    return "the first trials are the reference arms: " + ", ".join(names)


def headroom_text(space: Space, opts: Any) -> str:
    """The headroom check before the search, and whether the search stops after it."""
    from search.stages.headroom import arms

    seeds, names = space.search.headroom_seeds, [c.key for c in arms(space)]
    if seeds == 0 or len(names) < 2:
        return "off (--headroom-seeds 0)" if seeds == 0 else "off (no reference arm)"
    stop = (", then stop (--headroom-only)" if opts.headroom_only else
            ", then stop unless it shows headroom" if opts.stop_without_headroom else "")
    return (f"{', '.join(names)} under {seeds} fresh seeds before the search "
            f"({len(names) * seeds} trainings){stop}")


def confirm_text(space: Space) -> str:
    s = space.search
    proposal = reward_kind(space).proposal_text(space)
    if proposal is not None:
        if s.confirm == 0:
            return f"off: {proposal} is exported, unconfirmed"
        return (f"the base, {proposal} and the next best policies ({s.confirm} besides the "
                f"base) trained with real children under {s.confirm_seeds} fresh seeds each "
                f"({(s.confirm + 1) * s.confirm_seeds} trainings); {_export_rule(s.confirm)}")
    if s.confirm == 0:
        return "off: the best single reward is exported, unconfirmed"
    return (f"the {s.confirm} best policies and the base trained under {s.confirm_seeds} fresh "
            f"seeds each ({(s.confirm + 1) * s.confirm_seeds} trainings); "
            f"{_export_rule(s.confirm)}")


def _export_rule(k: int) -> str:
    return (f"the best is exported only if its margin over the base on the audit images has a "
            f"simultaneous 95% interval (Bonferroni over {k}; seeds and images counted) above "
            f"0, else the base")
