"""Hypothesis without its per-example deadline: the test machine is shared, and a
property whose example builds and validates a synthesized schedule (v-half, v-min)
takes 0.1-0.3 s there, which a busy core can push past the 200 ms default."""

from hypothesis import settings

settings.register_profile("pipebubble", deadline=None)
settings.load_profile("pipebubble")
