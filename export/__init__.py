"""calora.export: turn trained task directories into a bundle an Android or iOS app embeds.

Entry points: `calora.export.job.load_job` (read and cross-check task directories),
`calora.export.bundle.export_bundle` (run a registered target, write manifest, tokenizer, README),
and the `calora-export` CLI (`calora.export.cli:main`). Targets live in `calora.targets`.
"""
