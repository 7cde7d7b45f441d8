extends "bases/required.dsl"

domain child {
  rag r { corpus = null }
}
