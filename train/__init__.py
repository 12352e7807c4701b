"""calora.train: compress a backbone, train or import a teacher LoRA, train CA-LoRA.

Public entry points: `calora.train.pipeline.run` (what `calora-train` does),
`calora.train.artifacts.load_student` (load a trained task back, exactly),
`calora.train.spec.CompressionSpec` and `calora.train.compress.compress_model`.
Heavy libraries are imported by the modules that need them, so importing this package is cheap.
"""

__version__ = "0.1.0"
