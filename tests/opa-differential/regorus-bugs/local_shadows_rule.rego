package repro

# `r` is also a rule of the package; inside the body below, `some r` declares a local
# that shadows it, and the head's `r.n` refers to that local (OPA).
r := {"n": 0}

s contains r.n if {
	some r in input.xs
}

test_local_shadows_rule if s == {1} with input as {"xs": [{"n": 1}]}
