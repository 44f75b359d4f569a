package repro

# OPA's sprintf is Go's fmt.Sprintf: an argument without a verb is appended as
# "%!(EXTRA int64=3)" (`int=3` in older OPA releases), a verb without an argument prints
# "%!v(MISSING)". regorus refuses both calls ("extra arguments (3) specified for 2 format
# verbs", "no argument specified for format verb 1"); with non-strict built-in errors
# (Gatekeeper's setting) the rule body is then undefined, so a violation whose message has
# one argument too many or too few disappears. OPA passes both tests (checked with the
# opa-golib-python-bindings engine).
test_extra_argument { startswith(sprintf("%v and %v", [1, 2, 3]), "1 and 2%!(EXTRA int") }

test_missing_argument { sprintf("%v and %v", [1]) == "1 and %!v(MISSING)" }
