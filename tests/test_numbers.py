"""A mean and its standard error as people read them, in every interface."""

import pytest

from orchestrator.numbers import mean_pm


@pytest.mark.parametrize(("mean", "stderr", "shown"), [
    (0.681916, 0.002697, "0.6819 ± 0.0027"),  # the error to two significant digits, the mean to its place
    (0.469954, 0.009986, "0.470 ± 0.010"),
    (0.5, 0.099, "0.500 ± 0.099"),
    (123.44, 5.61, "123.4 ± 5.6"),
    (1234.5, 56.2, "1234 ± 56"),
    (0.25, 0, "0.25 ± 0"),
    (float("nan"), 0.1, "nan ± 0.1"),  # not a finite number: as it came
    ("n/a", None, "n/a ± None"),
])
def test_the_mean_is_shown_to_the_precision_its_standard_error_supports(mean, stderr, shown):
    assert mean_pm(mean, stderr) == shown
