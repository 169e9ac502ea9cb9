"""Sprig's date functions, with Go's reference-time layouts ("2006-01-02 15:04:05")."""
import datetime
import os
import re

from wwfast.builder.gotemplate.runtime import ANY, INT, STRING, FuncError, gofunc
from wwfast.builder.gotemplate.sprig_data import to_int64

A, S, I = ANY, STRING, INT


_GO_LAYOUT = [("2006", "%Y"), ("January", "%B"), ("Jan", "%b"), ("Monday", "%A"), ("Mon", "%a"),
              ("MST", "%Z"), ("-07:00", "%:z"), ("-0700", "%z"), ("01", "%m"), ("02", "%d"), ("15", "%H"),
              ("03", "%I"), ("04", "%M"), ("05", "%S"), ("PM", "%p"), ("06", "%y"), ("_2", "%e"),
              (".000000", ".%f"), (".000", ".%f3"), ("Z07:00", "%:z")]


def go_time_format(t, layout):
    out = []
    i = 0
    while i < len(layout):
        for token, code in _GO_LAYOUT:
            if layout.startswith(token, i):
                if code == "%:z":
                    off = t.strftime("%z") or "+0000"
                    text = "Z" if token == "Z07:00" and off == "+0000" else off[:3] + ":" + off[3:]
                elif code == ".%f3":
                    text = "." + t.strftime("%f")[:3]
                elif code == "%e":
                    text = f"{t.day:2d}"
                else:
                    text = t.strftime(code)
                out.append(text)
                i += len(token)
                break
        else:
            if layout.startswith("1", i) and not layout.startswith("15", i):
                out.append(str(t.month))
            elif layout.startswith("2", i):
                out.append(str(t.day))
            elif layout.startswith("3", i):
                out.append(str(t.hour % 12 or 12))
            elif layout.startswith("4", i):
                out.append(str(t.minute))
            elif layout.startswith("5", i):
                out.append(str(t.second))
            else:
                out.append(layout[i])
            i += 1
    return "".join(out)


def _as_time(v, zone=None):
    if isinstance(v, datetime.datetime):
        t = v
    elif isinstance(v, (int, float)) and type(v) is not bool:
        t = datetime.datetime.fromtimestamp(int(v), datetime.timezone.utc).astimezone()
    else:
        t = datetime.datetime.now().astimezone()
    if zone == "UTC":
        t = t.astimezone(datetime.timezone.utc)
    return t


def _duration(sec):
    secs = to_int64(sec)
    if secs == 0:
        return "0s"
    neg, secs = secs < 0, abs(secs)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{s}s"
    return ("-" if neg else "") + text



def _to_date(layout, value, must=False):
    """time.ParseInLocation(layout, value, Local) for the Go layouts go_time_format writes."""
    fmt = layout
    for token, code in _GO_LAYOUT:
        fmt = fmt.replace(token, code if code not in ("%:z", ".%f3") else ("%z" if code == "%:z" else ".%f"))
    try:
        return datetime.datetime.strptime(value, fmt).astimezone()
    except ValueError as e:
        if must:
            raise FuncError(str(e)) from None
        return datetime.datetime.fromtimestamp(0, datetime.timezone.utc)


_DURATION = re.compile(r"([-+]?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _date_modify(fmt_duration, t, must=False):
    parts = _DURATION.findall(fmt_duration)
    if not parts or "".join(a + b for a, b in parts) != fmt_duration.lstrip("+"):
        if must:
            raise FuncError(f"time: invalid duration {fmt_duration!r}")
        return t
    return _as_time(t) + datetime.timedelta(seconds=sum(float(a) * _UNIT[b] for a, b in parts))


def _ago(t):
    seconds = int((datetime.datetime.now().astimezone() - _as_time(t)).total_seconds())
    return _duration(seconds)


def _duration_round(v):
    seconds = abs(to_int64(v)) if not isinstance(v, datetime.datetime) else abs(int(
        (datetime.datetime.now().astimezone() - v).total_seconds()))
    for unit, size in (("y", 31536000), ("mo", 2592000), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"




FUNCS = {
    "now": gofunc()(lambda: datetime.datetime.now().astimezone()),
    "date": gofunc(S, A)(lambda fmt, t: go_time_format(_as_time(t), fmt)),
    "dateInZone": gofunc(S, A, S)(lambda fmt, t, z: go_time_format(_as_time(t, z), fmt)),
    "date_in_zone": gofunc(S, A, S)(lambda fmt, t, z: go_time_format(_as_time(t, z), fmt)),
    "htmlDate": gofunc(A)(lambda t: go_time_format(_as_time(t), "2006-01-02")),
    "htmlDateInZone": gofunc(A, S)(lambda t, z: go_time_format(_as_time(t, z), "2006-01-02")),
    "unixEpoch": gofunc(A)(lambda t: str(int(_as_time(t).timestamp()))),
    "duration": gofunc(A)(_duration),

    "toDate": gofunc(S, S)(lambda layout, value: _to_date(layout, value)),
    "mustToDate": gofunc(S, S)(lambda layout, value: _to_date(layout, value, must=True)),
    "dateModify": gofunc(S, A)(lambda d, t: _date_modify(d, t)),
    "date_modify": gofunc(S, A)(lambda d, t: _date_modify(d, t)),
    "mustDateModify": gofunc(S, A)(lambda d, t: _date_modify(d, t, must=True)),
    "must_date_modify": gofunc(S, A)(lambda d, t: _date_modify(d, t, must=True)),
    "ago": gofunc(A)(_ago),
    "durationRound": gofunc(A)(_duration_round),
    "randBytes": gofunc(I)(lambda n: __import__("base64").b64encode(os.urandom(max(n, 0))).decode()),
}
