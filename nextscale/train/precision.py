"""The training precisions by name, without torch, so that the command line can offer them before torch loads.

`nextscale.train.loop` maps each name to its autocast dtype (PRECISIONS); "auto" picks bf16 where the hardware
multiplies in it and fp32 elsewhere.
"""

PRECISION_NAMES = ("fp32", "bf16", "fp16")  # fp16 trains with a gradient scaler, on CUDA
PRECISION_CHOICES = ("auto", *PRECISION_NAMES)
