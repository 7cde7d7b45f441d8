domain t {
  description = "no end
}
