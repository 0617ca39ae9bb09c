"""Whose turn it is: the one place that turns the optimizer-step count into D and G steps."""

from __future__ import annotations

from dcgan.errors import check_int


class Alternating:
    """``n_critic`` D steps per G step: every batch makes a D step, every ``n_critic``-th batch also a G step.

    Everything is derived from the count of optimizer steps taken so far (Lightning's ``global_step``: D and G
    steps together), so it survives a resume.
    """

    def __init__(self, n_critic: int = 1) -> None:
        check_int("n_critic", n_critic, 1, "D steps per G step", 1)
        self.n_critic = n_critic

    def g_turn(self, steps: int) -> bool:
        """Whether the batch that starts after ``steps`` optimizer steps also makes a G step."""
        return (steps + 1) % (self.n_critic + 1) == self.n_critic

    def d_steps(self, steps: int) -> int:
        """D steps among the first ``steps`` optimizer steps."""
        return steps - steps // (self.n_critic + 1)

    def g_steps(self, steps: int) -> int:
        """G steps among the first ``steps`` optimizer steps."""
        return steps // (self.n_critic + 1)
