"""The Go template engine against Go itself: every case of gotemplate_cases.CASES rendered by Go's
text/template + sprig (tests/helpers/goref) and by wwfast.builder.gotemplate gives the same text, and
where Go fails, ours fails too."""
import pytest

from gotemplate_cases import CASES
from helpers import goref
from wwfast.builder.gotemplate import Template, TemplateError

pytestmark = [pytest.mark.goref,
              pytest.mark.skipif(not goref.available(), reason="needs golang-go and golang-github-masterminds-sprig-dev")]

# Output that depends on the moment or randomness is not compared; neither is the wording of errors
# (both must fail).


@pytest.fixture(scope="module")
def go_results():
    return goref.render_all(CASES)


def ours(text, data):
    try:
        return Template(text, name="t").execute(data), ""
    except TemplateError as e:
        return "", str(e)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_same_as_go(go_results, index):
    text, data = CASES[index]
    go_out, go_err = go_results[index]
    out, err = ours(text, data)
    if go_err:
        assert err, f"Go fails ({go_err}) but we render {out!r}"
    else:
        assert not err, f"Go renders {go_out!r} but we fail: {err}"
        assert out == go_out
