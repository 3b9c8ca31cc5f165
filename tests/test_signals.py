"""SIGINT/SIGTERM as exceptions, held back around writes (numgrad.signals)."""

from __future__ import annotations

import signal

import pytest

from numgrad import signals


def test_sigterm_raises_terminated_inside_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(signals.Terminated) as info, signals.raising():
        signal.raise_signal(signal.SIGTERM)
    assert info.value.signum == signal.SIGTERM
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_held_signal_is_raised_when_the_block_ends_not_before():
    done = []
    with pytest.raises(KeyboardInterrupt), signals.raising():
        with signals.held():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)  # the first signal wins
            done.append("write finished")
        done.append("never reached")
    assert done == ["write finished"]


def test_nested_holds_raise_at_the_outermost_end():
    order = []
    with pytest.raises(signals.Terminated), signals.raising():
        with signals.held():
            with signals.held():
                signal.raise_signal(signal.SIGTERM)
            order.append("inner done")
        order.append("never")
    assert order == ["inner done"]


def test_hooks_run_before_the_exception():
    seen = []
    with pytest.raises(signals.Terminated), signals.raising():
        with signals.on_signal(seen.append):
            signal.raise_signal(signal.SIGTERM)
    assert seen == [signal.SIGTERM]
    with pytest.raises(signals.Terminated), signals.raising():
        signal.raise_signal(signal.SIGTERM)  # the hook is gone with its block
    assert seen == [signal.SIGTERM]


def test_a_sigint_handler_someone_else_set_is_left_alone():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals.raising():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)  # ignored, as the owner wants
    finally:
        signal.signal(signal.SIGINT, previous)
