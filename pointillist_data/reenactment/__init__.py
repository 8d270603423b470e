"""Driving an existing avatar with a FLAME motion (``pointillist animate``).

* :mod:`.config` - :class:`~.config.AnimateConfig` (torch-free, so the command line builds
  its options at start-up);
* :mod:`.render` - reading an avatar folder (the toolkit's ``fit`` / ``avatar`` outputs or a
  GaussianAvatars output folder), animating it by its bindings
  (:mod:`pointillist_data.animation`) and rendering the driver | avatar reenactment.

Motions are read by :func:`pointillist_data.interop.motion.read_motion`. Nothing is imported
here so that importing the config stays light.
"""
