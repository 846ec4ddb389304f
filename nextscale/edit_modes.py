"""The zero-shot editing modes by name, without torch, so that the command line offers them before torch loads
(editing.py implements them): inpaint and class-edit regenerate the region, outpaint keeps it."""

EDIT_MODES = ("inpaint", "outpaint", "class-edit")
