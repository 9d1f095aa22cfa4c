#!/usr/bin/python3
"""Self-checks of tools/reference.py, the shapes data set and the scorer (seconds on one core).

    /usr/bin/python3 -m unittest tools/test_reference.py
"""
import json
import math
import os
import sys
import tempfile
import unittest

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402
import score_shapes as S  # noqa: E402
import shapes_dataset as D  # noqa: E402

torch.set_num_threads(1)


class SafetensorsTest(unittest.TestCase):
    def test_round_trip_keeps_dtype_shape_and_values(self):
        t = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64).reshape(7, 1),
             "c": torch.randn(2, 2).half(), "d": torch.tensor([1, 0, 1], dtype=torch.uint8)}
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "x.safetensors")
            R.save_safetensors(t, p)
            with open(p, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
            self.assertEqual(header["b"]["dtype"], "I64")
            self.assertEqual((8 + n) % 8, 0)
            back = R.load_safetensors(p)
        for k in t:
            self.assertEqual(back[k].dtype, t[k].dtype)
            self.assertTrue(torch.equal(back[k], t[k]), k)


class TokenizerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        R.build_clip_vocab(D.WORDS, cls.dir, model_max_length=16)
        cls.tok = R.CLIPTokenizer(cls.dir)

    def test_every_grammar_word_is_one_token(self):
        for w in D.WORDS:
            self.assertEqual(self.tok.tokenize(w), [w + "</w>"])

    def test_pads_with_eos_and_masks_the_padding(self):
        r = self.tok("  A RED  circle ")
        eos = self.tok.encoder["<|endoftext|>"]
        self.assertEqual(r["input_ids"][:5], [self.tok.encoder["<|startoftext|>"], self.tok.encoder["a</w>"],
                                              self.tok.encoder["red</w>"], self.tok.encoder["circle</w>"], eos])
        self.assertEqual(r["input_ids"][5:], [eos] * 11)
        self.assertEqual(r["attention_mask"], [1] * 5 + [0] * 11)

    def test_truncates_to_max_length_keeping_bos_and_eos(self):
        r = self.tok(" ".join(["red"] * 40))
        self.assertEqual(len(r["input_ids"]), 16)
        self.assertEqual(r["input_ids"][-1], self.tok.encoder["<|endoftext|>"])
        self.assertEqual(sum(r["attention_mask"]), 16)

    def test_unknown_words_fall_back_to_bytes(self):
        self.assertEqual(self.tok.tokenize("zq!"), ["z", "q</w>", "!</w>"])


class SchedulerTest(unittest.TestCase):
    def test_ddim_leading_and_trailing_match_diffusers(self):
        s = R.DDIMScheduler({})
        s.set_timesteps(4)
        self.assertEqual(s.timesteps.tolist(), [750, 500, 250, 0])
        s = R.DDIMScheduler({"timestep_spacing": "trailing"})
        s.set_timesteps(4)
        self.assertEqual(s.timesteps.tolist(), [999, 749, 499, 249])

    def test_dpm_linspace_timesteps_and_final_zero_sigma(self):
        s = R.DPMSolverMultistepScheduler({})
        s.set_timesteps(4)
        self.assertEqual(s.timesteps.tolist(), [999, 749, 500, 250])
        self.assertEqual(s.sigmas[-1].item(), 0.0)

    def test_flow_match_shift_and_euler_step(self):
        s = R.FlowMatchEulerDiscreteScheduler({"shift": 3.0})
        s.set_timesteps(4)
        sig_min = 3 * 0.001 / (1 + 2 * 0.001)
        x = np.linspace(1.0, sig_min, 4)
        want = 3 * x / (1 + 2 * x)
        self.assertTrue(np.allclose(s.sigmas[:-1].numpy(), want, atol=1e-6))
        self.assertTrue(torch.allclose(s.timesteps, s.sigmas[:-1] * 1000))
        x0, v = torch.randn(3), torch.randn(3)
        out = s.step(v, s.timesteps[0], x0)
        self.assertTrue(torch.allclose(out, x0 + (s.sigmas[1] - s.sigmas[0]) * v))

    def test_dpm_flow_solver_is_exact_on_a_straight_path(self):
        # With a perfect velocity (noise - x0) every flow solver lands on x0.
        cfg = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 2.0}
        s = R.DPMSolverMultistepScheduler(cfg)
        s.set_timesteps(6)
        x0, n = torch.randn(8), torch.randn(8)
        x = (1 - s.sigmas[0]) * x0 + s.sigmas[0] * n
        for t in s.timesteps:
            x = s.step(n - x0, t, x)
        self.assertTrue(torch.allclose(x, x0, atol=1e-5))


class ModelTest(unittest.TestCase):
    def test_pos_embed_first_token_is_sin0_cos1(self):
        pe = R.get_2d_sincos_pos_embed(16, 4, base_size=4)
        self.assertEqual(pe.shape, (16, 16))
        self.assertTrue(np.allclose(pe[0], [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4))
        # token 1 is one step along w: the first half (w) changes, the second (h) does not
        self.assertTrue(np.allclose(pe[1, 8:], pe[0, 8:]))
        self.assertAlmostEqual(float(pe[1, 0]), math.sin(1.0), places=6)

    def test_clip_is_causal(self):
        m = R.randomize(R.CLIPTextModel(dict(vocab_size=50, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=2, num_attention_heads=2,
                                             max_position_embeddings=8)), 0)
        ids = torch.randint(0, 50, (1, 8))
        ids2 = ids.clone()
        ids2[0, 5] = (ids[0, 5] + 1) % 50
        a, b = m(ids), m(ids2)
        self.assertTrue(torch.allclose(a[:, :5], b[:, :5], atol=1e-6))
        self.assertFalse(torch.allclose(a[:, 5:], b[:, 5:]))

    def test_random_tiny_model_runs_every_component(self):
        with tempfile.TemporaryDirectory() as d:
            R.write_random_model("tiny", 3, d)
            with open(os.path.join(d, "model_index.json")) as f:
                idx = json.load(f)
            self.assertEqual(idx["transformer"], ["diffusers", "PixArtTransformer2DModel"])
            out = R.run_component(d, "transformer", {
                "hidden_states": torch.randn(2, 4, 8, 8), "timestep": torch.tensor([10.0, 900.0]),
                "encoder_hidden_states": torch.randn(2, 16, 32),
                "encoder_attention_mask": torch.tensor([[1] * 4 + [0] * 12] * 2)})
            self.assertEqual(list(out["sample"].shape), [2, 4, 8, 8])  # learned-sigma half dropped
            self.assertGreater(out["sample"].std().item(), 0.05)
            lat = torch.randn(1, 4, 8, 8)
            img = R.run_component(d, "vae_decoder", {"latents": lat})["sample"]
            vae = R.load_component(os.path.join(d, "vae"), R.AutoencoderKL)
            self.assertTrue(torch.allclose(img, vae.decode(lat / 0.5 + 0.1), atol=1e-5))
            pipe = R.Pipeline(d)
            a, u8 = pipe("a red circle", lat, 3, 3.0, "dpm_2m")
            b, _ = pipe("a red circle", lat, 3, 3.0, "dpm_2m")
            self.assertTrue(torch.equal(a, b))
            self.assertEqual(list(u8.shape), [1, 32, 32, 3])


class DatasetTest(unittest.TestCase):
    def test_held_out_combinations_never_drawn(self):
        held = set(D.holdout_combinations())
        self.assertEqual(len(held), 84)
        rng = np.random.RandomState(0)
        ds = D.ShapesDataset(32)
        for _ in range(2000):
            a = ds.attrs(rng)
            self.assertNotIn((a["colour"], a["shape"], a["position"], a["background"]), held)
            self.assertNotEqual(a["colour"], a["background"])

    def test_captions_parse_back(self):
        self.assertEqual(D.parse_caption("a red circle in the top left on a blue background"),
                         {"colour": "red", "shape": "circle", "position": "top left", "background": "blue"})
        self.assertEqual(D.parse_caption("a red circle on a blue background"),
                         {"colour": "red", "shape": "circle", "background": "blue"})

    def test_scorer_accepts_true_images_and_rejects_wrong_captions(self):
        summary, _ = S.check_dataset(60, 32, seed=1)
        self.assertGreaterEqual(summary["all"], 0.95)
        img = D.draw({"colour": "red", "shape": "square", "position": "center", "background": "blue",
                      "cx": 0.5, "cy": 0.5, "radius": 0.18}, 32)
        self.assertTrue(S.score(img, "a red square in the center on a blue background")["all_ok"])
        r = S.score(img, "a green circle in the top left on a blue background")
        self.assertFalse(r["colour_ok"] or r["shape_ok"] or r["position_ok"])
        self.assertTrue(r["background_ok"])


if __name__ == "__main__":
    unittest.main()
