package templates.t1

import data.repro.lib

p[v] {
  lib.get({"x": 1}, v)
}

test_output_arg_through_import { p == {1} }
