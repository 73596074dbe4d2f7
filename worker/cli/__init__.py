"""The ``pixverse-tracker`` command (``main.main``): its parser, its commands and how they show
what they find; and the demo."""
