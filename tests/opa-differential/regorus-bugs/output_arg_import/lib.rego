package repro.lib

get(obj) = out {
  out := obj.x
}
