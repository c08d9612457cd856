"""distgan: GAN training on Hugging Face Accelerate with a validated ONNX export.

Importing this package loads neither torch nor onnxruntime, so that
`distgan.runtime` stays usable in applications that ship without torch.
"""

__version__ = "0.1.0"
