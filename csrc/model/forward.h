// The Gemma forward pass over rows of tokens that may belong to several sequences.
//
// A Session runs one sequence's chunk through it; a BatchForward (model/batch_forward.h) runs the
// next tokens of several sessions at once. The rows of the Workspace are the tokens of one or
// more `SeqRows` (a sequence's KV cache, its first position, its rows) laid end to end. Every
// step that works token by token (norms, matmuls, GeGLU, residual adds, the logits) runs once
// over all rows, so a batch of B sequences reads each weight once for B tokens; only RoPE
// (positions), the KV store and attention go sequence by sequence, against each one's own cache.
// Because an output row depends only on its own token's inputs (backend.h), each sequence's
// logits are bit for bit those of running it alone.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "backend/backend.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "model/workspace.h"

namespace gemma {

// n tokens of one sequence at positions pos0.., in Workspace rows row0 .. row0 + n - 1.
struct SeqRows {
  KVCache* kv = nullptr;
  int pos0 = 0;
  int n = 0;
  int row0 = 0;
};

class ForwardPass {
 public:
  explicit ForwardPass(const ModelConfig& c);  // the rope frequencies of the config

  // Runs rows tokens[0 .. rows) (rows = the sum of seqs[i].n <= ws.chunk), storing each token's
  // keys and values in its sequence's cache (reserved by the caller). Logits (soft-capped) of
  // the rows listed in logit_rows go to logits_out, one [vocab] row each in that order;
  // logit_rows == nullptr with n_logits == rows means every row. `check` runs between layers.
  void run(const Model& model, Backend& be, Workspace& ws, const int32_t* tokens, int rows, const SeqRows* seqs,
           int n_seqs, const int* logit_rows, int n_logits, float* logits_out,
           const std::function<void()>& check) const;

  bool checks_layers() const { return check_layers_; }  // GEMMA_CPP_CHECK_LAYERS was set at creation

 private:
  void rope_angles(Backend& be, Workspace& ws, const SeqRows* seqs, int n_seqs) const;
  void attention_block(const Model& model, Backend& be, Workspace& ws, int l, int rows, const SeqRows* seqs,
                       int n_seqs) const;
  void mlp_block(const Model& model, Backend& be, Workspace& ws, int l, int rows) const;
  void add_residual(const Model& model, Backend& be, Workspace& ws, int rows, const float* post_norm) const;
  void final_logits(const Model& model, Backend& be, Workspace& ws, int rows, const int* logit_rows, int n_logits,
                    float* logits_out) const;

  // Debug mode (GEMMA_CPP_CHECK_LAYERS=1): throws naming the step if the residual stream holds NaN/Inf.
  static void check_activations(const Workspace& ws, int d, int rows, const SeqRows* seqs, int n_seqs,
                                const char* step, int layer);

  std::vector<float> inv_freq_global_, inv_freq_local_;  // rope: global and local (sliding) layers
  bool check_layers_;  // GEMMA_CPP_CHECK_LAYERS was set when the session was created
};

}  // namespace gemma
