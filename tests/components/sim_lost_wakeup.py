"""A system file for ``sddf sim``: the bundled pingpong with a Pong that skips the re-check
(``sim_broken.NoRecheckPong``, found beside this file as a user's own component would be)."""
from sddf.apps.systems import pingpong
from sddf.system import SystemDescription


def system() -> SystemDescription:
    sdf = pingpong.system()
    sdf.pd("pong").program = "sim_broken:NoRecheckPong"
    return sdf
