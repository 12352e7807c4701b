"""calora.validate: run exported bundles in their own runtimes and check parity with PyTorch.

Entry points: `calora.validate.core.validate(ValidateConfig(...)) -> Report` and the
`calora-validate` CLI (`calora.validate.cli:main`).
"""
