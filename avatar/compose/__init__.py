"""The composition root: engines built from configuration, and every driver of them.

Nothing below this package builds an engine. ``engines.py`` loads the models and renderers that
a configuration names; the server (``serve.py``), ``avatar render`` (``offline.py``),
``avatar profile`` (``profile.py``), the capacity benchmark (``capacity.py``) and the render
evaluation (``render_eval.py``) all drive the same :class:`~avatar.engine.AvatarEngine`.
"""
