import random
from datetime import datetime, timedelta, timezone

import pytest

from workflow_trigger import InvalidInputError, PollPolicy, RetryPolicy
from workflow_trigger.policies import parse_retry_after


def test_poll_delay_grows_by_multiplier_up_to_max_interval() -> None:
    policy = PollPolicy(interval=1.0, multiplier=2.0, max_interval=5.0, jitter=0.0)
    rng = random.Random(0)
    assert [policy.delay(n, rng) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_poll_jitter_stays_within_its_fraction_and_spreads() -> None:
    policy = PollPolicy(interval=2.0, jitter=0.1)
    rng = random.Random(1)
    delays = [policy.delay(0, rng) for _ in range(200)]
    assert all(1.8 <= d <= 2.2 for d in delays)
    assert len({round(d, 3) for d in delays}) > 50


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval": 0},
        {"interval": -1},
        {"max_interval": float("inf")},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"timeout": 0},
        {"timeout": -3},
    ],
)
def test_poll_policy_refuses_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        PollPolicy(**kwargs)


def test_poll_policy_timeout_none_means_no_end() -> None:
    assert PollPolicy(timeout=None).timeout is None


def test_retry_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(backoff=0.5, max_backoff=3.0)
    rng = random.Random(2)
    for retry, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (10, 3.0)]:
        draws = [policy.delay(retry, rng) for _ in range(100)]
        assert all(0 <= d <= cap for d in draws)
        assert max(draws) > cap * 0.8


def test_retry_after_raises_the_wait_to_at_least_the_hint() -> None:
    policy = RetryPolicy(backoff=0.1)
    assert policy.delay(0, random.Random(0), retry_after=7.0) == 7.0


@pytest.mark.parametrize("attempts", [0, -1, 1.5, True])
def test_retry_attempts_counts_every_try(attempts: object) -> None:
    with pytest.raises(InvalidInputError, match="first included"):
        RetryPolicy(attempts=attempts)  # type: ignore[arg-type]


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    later = now + timedelta(seconds=30)
    assert parse_retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"), now) == 30.0
    earlier = now - timedelta(seconds=30)
    assert parse_retry_after(earlier.strftime("%a, %d %b %Y %H:%M:%S GMT"), now) == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad, now) is None
    assert parse_retry_after("-5") == 0.0


def test_a_max_interval_below_interval_is_refused_saying_what_to_pass() -> None:
    with pytest.raises(InvalidInputError, match="max_interval >= interval") as info:
        PollPolicy(interval=10, max_interval=1)
    assert "PollPolicy(interval=10, max_interval=30)" in str(info.value)


@pytest.mark.parametrize("jitter", [True, False, "0.1", None, float("nan"), 1.5])
def test_a_jitter_that_is_not_a_fraction_is_refused(jitter: object) -> None:
    with pytest.raises(InvalidInputError, match="jitter"):
        PollPolicy(jitter=jitter)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, True, "60", float("inf")])
def test_max_retry_after_must_be_a_positive_finite_number(value: object) -> None:
    with pytest.raises(InvalidInputError, match="max_retry_after"):
        RetryPolicy(max_retry_after=value)  # type: ignore[arg-type]


def test_poll_hints_are_cut_to_max_retry_after() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.poll_hint("1000000000", None) == 60.0
    assert policy.poll_hint(None, 10**9) == 60.0
    assert policy.poll_hint("5", 30.0) == 5.0  # the header wins over the provider's reading
    assert policy.poll_hint(None, 2.0) == 2.0
    assert policy.poll_hint("soon", None) is None
