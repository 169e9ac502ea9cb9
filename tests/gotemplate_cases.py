"""Template snippets for the engine's differential test against Go (test_gotemplate_vs_go.py).

Each case is (template, data). Written for this project: they cover the language (actions, pipelines,
variables, control structures, trimming, literals), the builtins, fmt verbs and the sprig functions
Warewulf templates use, with the kinds of data a node carries (maps of maps, lists, strings, numbers).
"""

NODE = {
    "Id": "n1", "Tags": {"DNS1": "1.1.1.1", "DNS2": "8.8.8.8", "route1": "10.0.0.0/8,10.0.0.1", "empty": ""},
    "NetDevs": {
        "default": {"Device": "eth0", "Hwaddr": "aa:bb:cc:dd:ee:01", "Ipaddr": "10.0.0.5", "MTU": "9000",
                    "Type": "", "Tags": {"DNSSEARCH": "a.example b.example;c.example"}},
        "ib": {"Device": "ib0", "Hwaddr": "", "Ipaddr": "", "Type": "InfiniBand", "Tags": {}},
    },
    "List": ["b", "a", "c", "a"], "Nums": [3, 1, 2], "Empty": [], "Map": {}, "Zero": 0, "Float": 2.5,
    "True": True, "False": False, "Nil": None, "Str": "Hello, World", "Nested": {"a": {"b": {"c": "deep"}}},
}

CASES = [
    # text, trimming, comments
    ("plain text\nwith lines\n", {}),
    ("a {{- \" b \" -}} c", {}),
    ("a  \n\t {{- 1 -}} \n  b", {}),
    ("x{{/* comment */}}y", {}),
    ("x {{- /* comment */ -}} y", {}),
    ("{{- \"lead\" }}\n  {{ \"next\" -}}\n\n  end", {}),
    ("{{-3}}|{{ -3 }}", {}),
    # literals
    ("{{ 1 }} {{ -2 }} {{ 0x1F }} {{ 0o17 }} {{ 017 }} {{ 0b101 }} {{ 1_000 }}", {}),
    ("{{ 1.5 }} {{ 1e3 }} {{ 1.0 }} {{ .5 }} {{ 1e-7 }} {{ 123456.0 }} {{ 1234567.0 }} {{ 1e21 }}", {}),
    ("{{ 'a' }} {{ '\\n' }} {{ true }} {{ false }}", {}),
    ("{{ \"tab\\there\" }} {{ `raw\\n` }} {{ \"\\u00e9\\x41\" }}", {}),
    ("{{ 1i }}", {}),
    # fields and maps
    ("{{ .Id }} {{ .Tags.DNS1 }} {{ .Tags.missing }} {{ .NetDevs.default.Device }}", NODE),
    ("{{ .Nested.a.b.c }} {{ .Nested.x.y }}", NODE),
    ("{{ .Map }} {{ .Empty }} {{ .List }} {{ .Nums }} {{ .Tags }}", NODE),
    ("{{ .Nil }}|{{ .Zero }}|{{ .Float }}|{{ .True }}", NODE),
    ("{{ . }}", {"a": 1, "b": [1, 2], "c": {"d": "e"}}),
    ("{{ .missing.deeper }}", {}),
    ("{{ $.Id }} {{ with .NetDevs.default }}{{ $.Id }}-{{ .Device }}{{ end }}", NODE),
    # variables
    ("{{ $x := 1 }}{{ $x }}{{ $x = 2 }}{{ $x }}", {}),
    ("{{ $x := \"a\" }}{{ if true }}{{ $x = \"b\" }}{{ $y := 3 }}{{ $y }}{{ end }}{{ $x }}", {}),
    ("{{ $n := 0 }}{{ range .Nums }}{{ $n = add $n . }}{{ end }}{{ $n }}", NODE),
    ("{{ $f := false }}{{ range $k, $v := .Tags }}{{ if eq (substr 0 5 $k) \"route\" }}{{ $f = true }}{{ end }}{{ end }}{{ $f }}", NODE),
    # if / else if / with / range
    ("{{ if .Zero }}z{{ else if .Float }}f{{ else }}e{{ end }}", NODE),
    ("{{ if .Empty }}y{{ else }}n{{ end }}{{ if .Map }}y{{ else }}n{{ end }}{{ if .Nil }}y{{ else }}n{{ end }}", NODE),
    ("{{ if .Tags.missing }}y{{ else }}n{{ end }}{{ if .Str }}y{{ end }}", NODE),
    ("{{ with .Tags.DNS1 }}[{{ . }}]{{ else }}none{{ end }}{{ with .Tags.none }}x{{ else }}none{{ end }}", NODE),
    ("{{ with $d := .NetDevs.default }}{{ $d.Ipaddr }}{{ end }}", NODE),
    ("{{ range .List }}{{ . }},{{ end }}", NODE),
    ("{{ range $i, $v := .List }}{{ $i }}:{{ $v }} {{ end }}", NODE),
    ("{{ range $k, $v := .NetDevs }}{{ $k }}={{ $v.Device }};{{ end }}", NODE),
    ("{{ range .Empty }}x{{ else }}empty{{ end }}{{ range .Tags.missing }}x{{ else }}nothing{{ end }}", NODE),
    ("{{ range $v := .Nums }}{{ if eq $v 1 }}{{ continue }}{{ end }}{{ if eq $v 2 }}{{ break }}{{ end }}{{ $v }}{{ end }}", NODE),
    ("{{ range $i, $e := .Nums }}{{ range $.List }}{{ $i }}{{ . }}{{ end }}|{{ end }}", NODE),
    # define / template / block
    ('{{ define "item" }}<{{ . }}>{{ end }}{{ range .List }}{{ template "item" . }}{{ end }}', NODE),
    ('{{ block "b" .Id }}[{{ . }}]{{ end }}', NODE),
    ('{{ template "missing" }}', {}),
    # pipelines and parentheses
    ("{{ .Str | lower | upper }} {{ \"x\" | printf \"%s-%s\" \"y\" }}", NODE),
    ("{{ (index .NetDevs \"default\").Device }} {{ (.NetDevs.default).MTU }}", NODE),
    ("{{ len (.List) }} {{ len .Tags }} {{ len .Str }} {{ len \"é\" }}", NODE),
    # comparison and logic
    ("{{ eq 1 1 }} {{ eq 1 2 3 1 }} {{ ne \"a\" \"b\" }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt \"b\" \"a\" }} {{ ge 1.5 1.5 }}", {}),
    ("{{ eq .Tags.missing \"x\" }} {{ eq .Str \"Hello, World\" }}", NODE),
    ("{{ eq 1 \"1\" }}", {}),
    ("{{ lt true false }}", {}),
    ("{{ and 1 0 2 }} {{ and 1 2 }} {{ or 0 \"\" \"x\" }} {{ or 0 \"\" }} {{ not 0 }} {{ not .Str }}", NODE),
    ("{{ and .Nil .Undefined.Deep }} {{ or .Str .Undefined }}", NODE),
    # index / slice / len errors
    ("{{ index .List 1 }} {{ index .Nested \"a\" \"b\" \"c\" }} {{ index .Tags \"nope\" }}", NODE),
    ("{{ index .List 9 }}", NODE),
    ("{{ slice .Str 0 5 }}", NODE),
    ("{{ len 3 }}", {}),
    # printf verbs
    ('{{ printf "%d|%5d|%-5d|%05d|%x|%X|%o|%b|%+d|%c" 42 42 42 42 255 255 8 5 7 65 }}', {}),
    ('{{ printf "%s|%q|%v|%10s|%-10s|%.2s|%x" "go" "q\\"x" "v" "r" "l" "trunc" "hi" }}', {}),
    ('{{ printf "%f|%.2f|%8.3f|%e|%g|%G|%v|%.3g" 3.14159 3.14159 3.14159 1234.5678 0.00001234 1e21 2.5 1234.5678 }}', {}),
    ('{{ printf "%t|%v" true false }}', {}),
    ('{{ printf "%d" "str" }}|{{ printf "%s" }}|{{ printf "%d %d" 1 }}|{{ printf "x" 1 2 }}|{{ printf "%!" }}|{{ printf "%" }}', {}),
    ('{{ printf "%v|%d|%s" .Nums .Nums .List }}', NODE),
    ('{{ printf "%v" .Tags }}', NODE),
    ('{{ printf "%[2]d %[1]d" 1 2 }}|{{ printf "%*d" 5 3 }}|{{ printf "%.*f" 2 3.14159 }}|{{ printf "%T %T %T %T" 1 "s" 1.5 .List }}', NODE),
    ('{{ printf "%q" 65 }}|{{ printf "%U" 65 }}|{{ printf "%#x" 255 }}|{{ printf "% x" "ab" }}|{{ printf "%08.3f" -3.5 }}', {}),
    ('{{ print 1 2 "a" "b" 3 }}|{{ println 1 "a" }}|{{ print }}|{{ print .Nil }}', NODE),
    # html / js / urlquery
    ('{{ html "<a href=\\"x\\">&</a>" }} {{ js "it\'s <b>" }} {{ urlquery "a b&c=d/é" }}', {}),
    # sprig strings
    ('{{ trim "  x  " }}|{{ trimAll "-" "--x--" }}|{{ trimPrefix "a" "abc" }}|{{ trimSuffix "c" "abc" }}|{{ upper "ab" }}|{{ lower "AB" }}|{{ title "hello world" }}|{{ untitle "Hello" }}', {}),
    ('{{ substr 0 5 "hello world" }}|{{ substr 6 -1 "hello world" }}|{{ substr -1 3 "hello" }}|{{ trunc 3 "hello" }}|{{ trunc -2 "hello" }}|{{ repeat 3 "ab" }}', {}),
    ('{{ contains "ell" "hello" }}|{{ hasPrefix "he" "hello" }}|{{ hasSuffix "lo" "hello" }}|{{ replace "l" "L" "hello" }}|{{ nospace "a b\\tc" }}', {}),
    ('{{ quote "a" 1 .Nil }}|{{ squote "a" 2 }}|{{ cat "a" 1 .Nil "b" }}|{{ indent 2 "a\\nb" }}|{{ nindent 2 "x" }}', NODE),
    ('{{ join "," .List }}|{{ join "-" .Nums }}|{{ splitList "," "a,b,,c" }}|{{ (split "," "a,b")._1 }}|{{ toStrings .Nums }}|{{ sortAlpha .List }}', NODE),
    ('{{ plural "one" "many" 1 }} {{ plural "one" "many" 2 }} {{ snakecase "FooBar" }} {{ camelcase "foo_bar" }} {{ kebabcase "FooBar" }}', {}),
    ('{{ abbrev 5 "hello world" }}|{{ initials "Hello World" }}|{{ wrap 5 "aaa bbb ccc" }}|{{ b64enc "hi" }}|{{ b64dec "aGk=" }}|{{ b32enc "hi" }}', {}),
    ('{{ toString 1 }}|{{ toString 1.5 }}|{{ toString .List }}|{{ toString .Nil }}', NODE),
    # sprig lists and dicts
    ('{{ $l := list 1 "a" }}{{ $l = append $l 2 }}{{ $l }} {{ prepend $l 0 }} {{ first $l }} {{ last $l }} {{ rest $l }} {{ initial $l }}', {}),
    ('{{ uniq .List }} {{ without .List "a" }} {{ has "c" .List }} {{ has "z" .List }} {{ reverse .List }} {{ compact (list 0 1 "" "a" .Nil) }}', NODE),
    ('{{ concat .List .Nums }} {{ slice .List 1 3 }} {{ slice .List 2 }} {{ chunk 2 .Nums }} {{ first .Empty }}', NODE),
    ('{{ $d := dict "a" 1 "b" "x" }}{{ $d }} {{ get $d "a" }} {{ get $d "z" }} {{ hasKey $d "b" }} {{ $_ := set $d "c" 3 }}{{ $d.c }} {{ keys $d | sortAlpha }} {{ $d = unset $d "a" }}{{ $d }}', {}),
    ('{{ pick (dict "a" 1 "b" 2) "a" }} {{ omit (dict "a" 1 "b" 2) "a" }} {{ dig "a" "b" "c" "none" .Nested }} {{ dig "a" "x" "none" .Nested }} {{ pluck "a" (dict "a" 1) (dict "b" 2) }}', NODE),
    ('{{ merge (dict "a" 1) (dict "a" 2 "b" 3) }} {{ mergeOverwrite (dict "a" 1) (dict "a" 2 "b" 3) }} {{ values (dict "a" 1) }}', {}),
    # defaults, empty, ternary, json
    ('{{ default "d" "" }}|{{ default "d" "x" }}|{{ default 5 0 }}|{{ default "d" .Tags.missing }}|{{ default "d" .Empty }}|{{ default "d" }}', NODE),
    ('{{ empty "" }} {{ empty 0 }} {{ empty .List }} {{ empty .Map }} {{ empty .Nil }} {{ empty false }} {{ empty .Nested }}', NODE),
    ('{{ coalesce "" 0 "x" }} {{ coalesce .Nil }} {{ all 1 "a" }} {{ all 1 "" }} {{ any 0 "" "a" }} {{ ternary "y" "n" true }} {{ ternary "y" "n" false }}', NODE),
    ('{{ toJson .NetDevs }}|{{ toJson .Nums }}|{{ toJson "<&>" }}|{{ toRawJson "<&>" }}|{{ toJson 2.5 }}|{{ toJson .Nil }}', NODE),
    ('{{ toPrettyJson .Nested }}', NODE),
    ('{{ (fromJson "{\\"a\\": 1, \\"b\\": [true, null]}").a }} {{ fromJson "[1,2]" }} {{ fromJson "bad" }}', {}),
    ('{{ typeOf 1 }} {{ typeOf "s" }} {{ typeOf 1.5 }} {{ typeOf .List }} {{ typeOf (add 1 2) }} {{ kindOf .Tags }} {{ kindIs "slice" .List }} {{ typeIs "int" 1 }}', NODE),
    # sprig math
    ('{{ add 1 2 3 }} {{ add1 5 }} {{ sub 5 3 }} {{ div 7 2 }} {{ div -7 2 }} {{ mod 7 3 }} {{ mod -7 3 }} {{ mul 2 3 4 }} {{ max 1 5 3 }} {{ min 4 2 }}', {}),
    ('{{ add "3" 1 }} {{ add 1.9 1 }} {{ int "42" }} {{ int64 "0x10" }} {{ float64 "1.5" }} {{ atoi "12" }} {{ atoi "x" }}', {}),
    ('{{ addf 1.5 2 }} {{ subf 5 1.5 }} {{ mulf 1.5 2 }} {{ divf 1 4 }} {{ ceil 1.2 }} {{ floor 1.8 }} {{ round 2.555 2 }} {{ maxf 1 2.5 }} {{ minf 1 2.5 }}', {}),
    ('{{ until 3 }} {{ untilStep 0 10 3 }} {{ seq 3 }} {{ seq 2 5 }} {{ seq 5 2 }} {{ seq 0 2 10 }}', {}),
    ('{{ div 1 0 }}', {}),
    # sprig regex, paths, hashes
    ('{{ regexMatch "^DNS[0-9]*$" "DNS1" }} {{ regexMatch "^DNS[0-9]*$" "DNSSEARCH" }} {{ regexFindAll "[0-9]+" "a1b22c333" -1 }} {{ regexFind "b+" "abbbc" }}', {}),
    ('{{ regexReplaceAll "a(x*)b" "-ab-axxb-" "${1}W" }} {{ regexReplaceAllLiteral "a(x*)b" "-ab-axxb-" "${1}" }} {{ regexSplit "[ ;]+" "a b;;c" -1 }} {{ regexSplit "," "a,b,c" 2 }} {{ regexQuoteMeta "1.2" }}', {}),
    ('{{ without (regexSplit "[ ;]+" .NetDevs.default.Tags.DNSSEARCH -1) "" | join ";" }}', NODE),
    ('{{ base "/a/b.txt" }} {{ dir "/a/b.txt" }} {{ clean "/a/../b//c/" }} {{ ext "x.tar.gz" }} {{ isAbs "a" }} {{ base "" }} {{ dir "x" }}', {}),
    ('{{ sha256sum "abc" }} {{ sha1sum "abc" }} {{ adler32sum "abc" }}', {}),
    ('{{ semverCompare ">=1.2.0" "1.3.0" }} {{ semverCompare "~1.2" "1.3.0" }} {{ (semver "1.2.3").Minor }}', {}),
    ('{{ fail "boom" }}', {}),
    # errors and odd cases
    ("{{ .Str.Foo }}", NODE),
    ("{{ nosuchfunc 1 }}", {}),
    ("{{ if }}x{{ end }}", {}),
    ("{{ end }}", {}),
    ("{{ range .List }}", NODE),
    ("{{ $undefined }}", {}),
    ("{{ break }}", {}),
    ("{{ \"unterminated }}", {}),
    ("{{ .List | 1 }}", NODE),
    ("{{ lower 3 }}", {}),
    ("{{ lower .Nums }}", NODE),
    ("{{ substr \"0\" 1 \"abc\" }}", {}),
    ("{{ repeat 2 .Tags.missing }}", NODE),
    ("{{ nil }}", {}),
    ("{{ (1).Foo }}", {}),
    ("{{ .Id 1 }}", NODE),
    ("{{ template \"x\" }}{{ define \"x\" }}{{ template \"x\" }}{{ end }}", {}),
]
