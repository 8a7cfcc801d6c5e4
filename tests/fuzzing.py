"""Hypothesis settings for the fuzz tests of outside input (LLM answers, layout files, prompts, flags, editor state).

The default job (``pytest``, ``.ci/run``) runs each such test with the small count it names. The fuzz job runs every
one of them with the ``fuzz`` profile, 10,000 examples per entry point::

    SCENEWRIGHT_FUZZ=1 pytest -m fuzz -p no:cacheprovider

``tests/conftest.py`` imports this module first, so the profile is loaded before any test is collected.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings

#: Examples per fuzz test in the fuzz job.
FUZZ_EXAMPLES = 10_000
#: Set to 1 to run the fuzz job's profile instead of each test's own small count.
FUZZ_ENV = "SCENEWRIGHT_FUZZ"

# Long runs meet slow and heavily filtered inputs that the short runs never draw; neither is a bug of ours.
settings.register_profile(
    "fuzz",
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    print_blob=True,
)
FUZZING = os.environ.get(FUZZ_ENV, "") == "1"
if FUZZING:
    settings.load_profile("fuzz")


def fuzz(max_examples: int, **options) -> Callable:
    """Mark a hypothesis test of outside input ``fuzz``; it runs ``max_examples`` examples, or the fuzz profile's count under ``SCENEWRIGHT_FUZZ=1``.

    ``options`` are further :class:`hypothesis.settings` (e.g. ``suppress_health_check``); put ``@fuzz(...)`` above ``@given``.
    """
    if FUZZING:
        profile = settings.get_profile("fuzz")
        suppressed = [*profile.suppress_health_check, *options.pop("suppress_health_check", [])]
        chosen = settings(profile, suppress_health_check=suppressed, **options)
    else:
        chosen = settings(max_examples=max_examples, deadline=None, **options)

    def decorate(test: Callable) -> Callable:
        return pytest.mark.fuzz(chosen(test))

    return decorate
