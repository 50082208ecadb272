"""services.common.rpc.Arity: the quick test that a call's arguments fit a service method never says yes where
nameko's own check (inspect.getcallargs) would refuse, and says yes to the calls services make."""

import inspect

from hypothesis import given
from hypothesis import strategies as st

from services.common.rpc import Arity


class Methods:
    def none(self):
        pass

    def one(self, a):
        pass

    def defaults(self, a, b=None, c=3):
        pass

    def star(self, *args, **kwargs):
        pass

    def keyword_only(self, a, *, b=1):
        pass


NAMES = st.sampled_from(["a", "b", "c", "d"])


@given(
    method=st.sampled_from(["none", "one", "defaults", "star", "keyword_only"]),
    args=st.lists(st.integers(), max_size=4),
    kwargs=st.dictionaries(NAMES, st.integers(), max_size=3),
)
def test_a_call_that_fits_quickly_also_binds(method, args, kwargs):
    function = getattr(Methods, method)
    try:
        inspect.getcallargs(function, None, *args, **kwargs)
        binds = True
    except TypeError:
        binds = False
    if Arity(function).fits(tuple(args), kwargs):
        assert binds


def test_the_usual_calls_take_the_quick_way():
    assert Arity(Methods.one).fits((1,), {})
    assert Arity(Methods.defaults).fits((1,), {"c": 2, "b": 1})
    assert Arity(Methods.defaults).fits((), {"a": 1})
    assert not Arity(Methods.star).fits((), {})  # always checked the long way
    assert not Arity(Methods.defaults).fits((1,), {"a": 1})  # given twice
