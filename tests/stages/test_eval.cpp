// The shapes scorer (stages/eval): captions of the grammar parse and others are refused,
// images drawn here are judged right or caught as wrong, and — where /usr/bin/python3 has
// numpy — every decision agrees with tools/score_shapes.py on the same pixels.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/support/temp_dir.hpp"
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "stages/eval/shape_score.hpp"

using namespace stagecraft;
namespace fs = std::filesystem;

namespace {

std::array<int, 3> colour_rgb(const std::string& name) {
  for (const auto& c : shapes_palette())
    if (name == c.name) return c.rgb;
  FAIL("no palette colour " << name);
  return {};
}

// Draws like tools/shapes_dataset.py draw(): 4x4 supersampled, box-filtered, rounded.
Tensor draw(const std::string& colour, const std::string& shape, double cx, double cy, const std::string& background,
            int size = 32, double radius = 0.18) {
  const int ss = 4, big = size * ss;
  const auto fg = colour_rgb(colour), bg = colour_rgb(background);
  std::vector<double> acc(size * size * 3, 0.0);
  const double X = cx * big, Y = cy * big, r = radius * big;
  for (int y = 0; y < big; ++y)
    for (int x = 0; x < big; ++x) {
      const double px = x + 0.5, py = y + 0.5;
      bool in = false;
      if (shape == "circle") {
        in = (px - X) * (px - X) + (py - Y) * (py - Y) <= r * r;
      } else if (shape == "square") {
        const double h = r * 0.886;
        in = std::abs(px - X) <= h && std::abs(py - Y) <= h;
      } else {
        const double h = r * 1.1, top = Y - h, bot = Y + h * 0.8, t = (py - top) / (bot - top);
        in = t >= 0 && t <= 1 && std::abs(px - X) <= t * h * 1.1;
      }
      const auto& c = in ? fg : bg;
      for (int ch = 0; ch < 3; ++ch) acc[((y / ss) * size + x / ss) * 3 + ch] += c[ch];
    }
  Tensor img = Tensor::empty({size, size, 3}, DType::u8);
  for (size_t i = 0; i < acc.size(); ++i)
    img.data_as<uint8_t>()[i] = static_cast<uint8_t>(std::lround(acc[i] / (ss * ss)));
  return img;
}

Tensor add_noise(const Tensor& img, int amplitude, unsigned seed) {
  Tensor out = img.clone();
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(-amplitude, amplitude);
  for (int64_t i = 0; i < out.numel(); ++i) {
    const int v = out.data_as<uint8_t>()[i] + d(rng);
    out.data_as<uint8_t>()[i] = static_cast<uint8_t>(std::clamp(v, 0, 255));
  }
  return out;
}

ShapeScore score(const Tensor& img, const std::string& caption) {
  return score_shapes_image(img, parse_shapes_caption(caption));
}

using stagecraft::testing::TempDir;

}  // namespace

TEST_CASE("captions of the shapes grammar parse into their parts, case and spacing aside") {
  const auto full = parse_shapes_caption("a red circle in the top left on a blue background");
  CHECK(full.colour == "red");
  CHECK(full.shape == "circle");
  CHECK(full.position == std::optional<std::string>("top left"));
  CHECK(full.background == std::optional<std::string>("blue"));

  const auto shortest = parse_shapes_caption("  A Yellow   TRIANGLE ");
  CHECK(shortest.colour == "yellow");
  CHECK(shortest.shape == "triangle");
  CHECK_FALSE(shortest.position.has_value());
  CHECK_FALSE(shortest.background.has_value());

  CHECK(parse_shapes_caption("a green square in the center").position == std::optional<std::string>("center"));
  const auto bg_only = parse_shapes_caption("a white square on a black background");
  CHECK_FALSE(bg_only.position.has_value());
  CHECK(bg_only.background == std::optional<std::string>("black"));
}

TEST_CASE("captions outside the grammar are refused with the word that broke it") {
  auto message = [](const std::string& caption) {
    try {
      parse_shapes_caption(caption);
    } catch (const Error& e) {
      CHECK(e.code() == Errc::invalid_argument);
      return std::string(e.what());
    }
    FAIL("accepted: " << caption);
    return std::string();
  };
  CHECK(message("a red hexagon").find("'hexagon'") != std::string::npos);
  CHECK(message("a red hexagon").find("circle, square, triangle") != std::string::npos);
  CHECK(message("a pink circle").find("a colour") != std::string::npos);
  CHECK(message("the red circle").find("'the'") != std::string::npos);
  CHECK(message("a red circle in the middle").find("a position") != std::string::npos);
  CHECK(message("a red circle in the top").find("a position") != std::string::npos);
  CHECK(message("a red circle on a blue").find("the end") != std::string::npos);
  CHECK(message("a red circle on a blue background please").find("'please'") != std::string::npos);
  // Order is part of the grammar: the position comes before the background.
  CHECK(message("a red circle on a blue background in the center").find("'in'") != std::string::npos);
  CHECK(message("").find("'a'") != std::string::npos);
}

TEST_CASE("a red circle on blue is judged right in colour, shape, position and background") {
  const Tensor img = draw("red", "circle", 0.5, 0.5, "blue");
  const ShapeScore s = score(img, "a red circle in the center on a blue background");
  CHECK(s.colour_ok);
  CHECK(s.shape_ok);
  CHECK(s.position_ok == std::optional<bool>(true));
  CHECK(s.background_ok == std::optional<bool>(true));
  CHECK(s.colour_adherent());
  CHECK(s.all_ok());
  CHECK(s.found.fill == doctest::Approx(3.14159 / 4).epsilon(0.08));
  // A [1, H, W, 3] batch of one is accepted as well.
  CHECK(score(img.unsqueeze(0), "a red circle").all_ok());
}

TEST_CASE("a wrong shape colour, a wrong background and a square for a circle are caught") {
  const Tensor red_circle = draw("red", "circle", 0.5, 0.5, "blue");
  const ShapeScore wrong_colour = score(red_circle, "a green circle on a blue background");
  CHECK_FALSE(wrong_colour.colour_ok);
  CHECK(wrong_colour.shape_ok);
  CHECK_FALSE(wrong_colour.colour_adherent());
  CHECK(wrong_colour.found.colour == std::optional<std::string>("red"));

  const ShapeScore wrong_bg = score(red_circle, "a red circle on a white background");
  CHECK(wrong_bg.colour_ok);
  CHECK(wrong_bg.background_ok == std::optional<bool>(false));
  CHECK_FALSE(wrong_bg.colour_adherent());

  const Tensor square = draw("red", "square", 0.5, 0.5, "blue");
  const ShapeScore want_circle = score(square, "a red circle on a blue background");
  CHECK(want_circle.colour_adherent());
  CHECK_FALSE(want_circle.shape_ok);
  CHECK(want_circle.found.shape == std::optional<std::string>("square"));
  CHECK_FALSE(want_circle.all_ok());
}

TEST_CASE("every shape is recognised at every position, also at 64 pixels and with noise") {
  unsigned seed = 1;
  for (int size : {32, 64})
    for (const auto& shape : shapes_shapes())
      for (const auto& pos : shapes_positions()) {
        const auto xy = shapes_position_xy(pos);
        const Tensor img = add_noise(draw("yellow", shape, xy[0], xy[1], "purple", size, 0.2), 12, seed++);
        const ShapeScore s = score(img, "a yellow " + shape + " in the " + pos + " on a purple background");
        CAPTURE(size);
        CAPTURE(shape);
        CAPTURE(pos);
        CAPTURE(s.found.fill);
        CHECK(s.all_ok());
        // A caption asking for another position is caught.
        const std::string other = pos == "center" ? "top left" : "center";
        CHECK_FALSE(*score(img, "a yellow " + shape + " in the " + other).position_ok);
      }
}

TEST_CASE("an image with nothing drawn fails colour and shape but still has a background") {
  const Tensor plain = draw("white", "circle", 0.5, 0.5, "white");
  const ShapeScore s = score(plain, "a white circle in the center on a white background");
  CHECK_FALSE(s.found.colour.has_value());
  CHECK_FALSE(s.colour_ok);
  CHECK_FALSE(s.shape_ok);
  CHECK(s.position_ok == std::optional<bool>(false));
  CHECK(s.background_ok == std::optional<bool>(true));
  // A shape too close to the background colour (within 80) does not count as drawn.
  Tensor faint = plain.clone();
  faint.data_as<uint8_t>()[(16 * 32 + 16) * 3] = 200;  // (200,245,245) labels white anyway
  CHECK_FALSE(analyse_shapes_image(faint).colour.has_value());
}

TEST_CASE("images that are not u8 RGB are refused") {
  CHECK_THROWS_AS(analyse_shapes_image(Tensor::zeros({8, 8, 3}, DType::f32)), Error);
  CHECK_THROWS_AS(analyse_shapes_image(Tensor::zeros({8, 8, 4}, DType::u8)), Error);
  CHECK_THROWS_AS(analyse_shapes_image(Tensor::zeros({2, 8, 8, 3}, DType::u8)), Error);
}

TEST_CASE("the scorer agrees with tools/score_shapes.py image for image") {
  if (std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0) {
    MESSAGE("skipped: /usr/bin/python3 cannot import numpy");
    return;
  }
  TempDir tmp;
  // Images drawn here (clean, noisy, blank, pure noise) go to Python as raw bytes; Python adds
  // true renderings of its own data set. Both sides analyse every image.
  struct Case {
    Tensor img;
    std::string caption;
  };
  std::vector<Case> cases;
  unsigned seed = 100;
  const std::vector<std::string> colours = {"red", "green", "blue", "yellow", "white", "black", "purple", "orange"};
  for (size_t i = 0; i < colours.size(); ++i) {
    const auto& fg = colours[i];
    const auto& bg = colours[(i + 3) % colours.size()];
    const auto& shape = shapes_shapes()[i % 3];
    const auto& pos = shapes_positions()[i % 5];
    const auto xy = shapes_position_xy(pos);
    const Tensor clean = draw(fg, shape, xy[0] + 0.03, xy[1] - 0.02, bg, i % 2 ? 64 : 32, 0.15 + 0.01 * i);
    const std::string cap = "a " + fg + " " + shape + " in the " + pos + " on a " + bg + " background";
    cases.push_back({clean, cap});
    cases.push_back({add_noise(clean, 60, seed++), cap});  // noisy labels and masks
  }
  cases.push_back({draw("black", "circle", 0.5, 0.5, "black"), "a black circle on a black background"});
  {
    Tensor pure = Tensor::empty({32, 32, 3}, DType::u8);
    std::mt19937 rng(7);
    for (int64_t i = 0; i < pure.numel(); ++i) pure.data_as<uint8_t>()[i] = static_cast<uint8_t>(rng() & 255);
    cases.push_back({pure, "a red square"});
  }

  nlohmann::json manifest = nlohmann::json::array();
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = (tmp.path / ("img" + std::to_string(i) + ".bin")).string();
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(cases[i].img.data_as<uint8_t>()), cases[i].img.numel());
    manifest.push_back({{"path", path}, {"h", cases[i].img.size(0)}, {"w", cases[i].img.size(1)},
                        {"caption", cases[i].caption}});
  }
  std::ofstream(tmp.path / "in.json") << manifest.dump();
  std::ofstream(tmp.path / "check.py") << R"PY(
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import score_shapes as S, shapes_dataset as D
items = json.load(open(sys.argv[2]))
rng = np.random.RandomState(5)
for size in (32, 64):
    ds = D.ShapesDataset(size)
    for k in range(12):
        img, a = ds.sample(rng)
        path = "%s/ds%d_%d.bin" % (sys.argv[4], size, k)
        img.tofile(path)
        items.append({"path": path, "h": size, "w": size, "caption": D.caption_for(a, rng, p_full=0.5)})
for it in items:
    img = np.fromfile(it["path"], dtype=np.uint8).reshape(it["h"], it["w"], 3)
    r = S.score(img, it["caption"])
    it["found"] = r["found"]
    it["ok"] = {k: v for k, v in r.items() if k.endswith("_ok")}
json.dump(items, open(sys.argv[3], "w"))
)PY";
  const std::string cmd = "/usr/bin/python3 " + (tmp.path / "check.py").string() + " " + STAGECRAFT_SOURCE_DIR +
                          "/tools " + (tmp.path / "in.json").string() + " " + (tmp.path / "out.json").string() +
                          " " + tmp.path.string() + " > " + (tmp.path / "log.txt").string() + " 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream log(tmp.path / "log.txt");
    std::stringstream ss;
    ss << log.rdbuf();
    FAIL("tools/score_shapes.py failed: " << cmd << "\n" << ss.str());
  }
  const auto out = nlohmann::json::parse(std::ifstream(tmp.path / "out.json"));
  REQUIRE(out.size() == cases.size() + 24);
  int found_shapes = 0;
  for (const auto& it : out) {
    const int64_t h = it["h"], w = it["w"];
    Tensor img = Tensor::empty({h, w, 3}, DType::u8);
    std::ifstream(it["path"].get<std::string>(), std::ios::binary)
        .read(reinterpret_cast<char*>(img.data_as<uint8_t>()), img.numel());
    const std::string caption = it["caption"];
    CAPTURE(caption);
    CAPTURE(it["path"].get<std::string>());
    const ShapeScore s = score(img, caption);
    const auto& ok = it["ok"];
    CHECK(s.colour_ok == ok["colour_ok"].get<bool>());
    CHECK(s.shape_ok == ok["shape_ok"].get<bool>());
    CHECK(s.position_ok.has_value() == ok.contains("position_ok"));
    if (s.position_ok) CHECK(*s.position_ok == ok["position_ok"].get<bool>());
    CHECK(s.background_ok.has_value() == ok.contains("background_ok"));
    if (s.background_ok) CHECK(*s.background_ok == ok["background_ok"].get<bool>());
    CHECK(s.all_ok() == ok["all_ok"].get<bool>());
    const auto& py = it["found"];
    CHECK(s.found.background == py["background"].get<std::string>());
    if (py["colour"].is_null()) {
      CHECK_FALSE(s.found.colour.has_value());
      continue;
    }
    ++found_shapes;
    CHECK(s.found.colour == py["colour"].get<std::string>());
    CHECK(s.found.shape == py["shape"].get<std::string>());
    CHECK(s.found.position == py["position"].get<std::string>());
    CHECK(s.found.area == py["area"].get<int64_t>());
    CHECK(std::abs(s.found.fill - py["fill"].get<double>()) <= 0.0005 + 1e-9);
    CHECK(std::abs(s.found.cx - py["centroid"][0].get<double>()) <= 0.0005 + 1e-9);
    CHECK(std::abs(s.found.cy - py["centroid"][1].get<double>()) <= 0.0005 + 1e-9);
  }
  MESSAGE(out.size() << " images cross-checked, " << found_shapes << " with a shape found");
  CHECK(found_shapes >= static_cast<int>(out.size()) - 2);
}
