package repro

# Rego v0 still has OPA's deprecated built-ins (`opa test --v0-compatible` passes these;
# Gatekeeper compiles templates as v0, so old gatekeeper-library templates use them).
# regorus 0.14.1 has none of them: each call fails with "could not find function".
# Not a parser bug: an embedder can register them with `Engine::add_extension`.
test_any { any([false, true]) }

test_all { all([true, true]) }

test_re_match { re_match("^a+$", "aaa") }
