"""The offline demo (``mmadapter demo``): synthetic data, then tiny components that learn their own knowledge,
then the real mmadapter workflow on top of them.

No pretrained weights can be downloaded offline, so step 1 (:mod:`mmadapter.demo.pretrain`) first teaches a
tiny Whisper-shaped audio encoder, a tiny CLIP-shaped vision encoder and a tiny Llama what real pretrained
components would already know, and saves them as ordinary checkpoint directories. The demo recipes
(``recipes/demo/``) then load them by ``name_or_path`` through the same code that loads real checkpoints.
"""
