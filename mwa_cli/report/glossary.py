"""The report's glossary: one line per term, in English and Japanese (`mwa report --explain`, the HTML block)."""

from __future__ import annotations

GLOSSARY: dict[str, list[tuple[str, str]]] = {
    "en": [
        ("R@K", "Recall at K: the share of queries (%) whose correct match is among the top K results. "
                "Image→text: each test photo asks for its captions; text→image: each caption asks for its photo."),
        ("RSUM", "The sum of the six recalls (R@1, R@5, R@10 in both directions), 0–600: one number for retrieval "
                 "quality."),
        ("Δ RSUM", "RSUM minus full fine-tuning's RSUM on the same test images, in points."),
        ("Full-FT RSUM kept", "This run's RSUM as a share of full fine-tuning's (over 100 %: higher). Whether the "
                              "difference is real is the verdict's job, from the interval below it."),
        ("95 % interval", "Where the figure would fall with another draw of test photos of the same size (2000 "
                          "bootstrap resamples of the test images). A Δ interval that contains 0: the test set "
                          "cannot tell the two runs apart."),
        ("†", "R@K is 100 % by construction when K is at least the number of candidates (e.g. R@10 with only 4 "
              "test images)."),
        ("MWA", "MultiWay-Adapter: small trainable modules (NKE and an alignment enhancer) in each layer of a "
                "frozen backbone; the method this tool evaluates."),
        ("NKE", "New Knowledge Extractor: MWA's bottleneck adapters alone, without the alignment enhancer."),
        ("LoRA", "Low-Rank Adaptation: trainable low-rank updates of the attention weights of a frozen backbone."),
        ("Full FT", "Full fine-tuning: every weight of the backbone trains. The baseline every method is compared "
                    "with."),
        ("Frozen", "The pretrained backbone as it is, nothing trained (zero-shot): the floor."),
        ("Chance", "What a model that scores at random gets on the same queries (label level: from how often each "
                   "label occurs; instance level: about K / the number of candidates), with the range 95 % of "
                   "random models fall in."),
        ("Did not learn", "A trained run whose RSUM is not above the zero-shot backbone's (paired 95 % interval) or "
                          "not above chance, or that collapsed (one label answers nearly everything). The report "
                          "then gives no verdict and no yearly cost."),
        ("Seeds", "Runs that differ only by --seed. With several per method the verdict's interval also holds the "
                  "seed-to-seed spread; with one, it says it cannot tell training noise from a difference."),
        ("Time to quality", "Wall time a run needed to reach a share (95 %) of full fine-tuning's best validation "
                            "RSUM; the yearly costs use it."),
        ("GPU-/CPU-hours", "Wall time × devices used. Yearly costs multiply them by the assumed --gpu-cost (a "
                           "CPU-hour price for CPU runs): an assumption, not a measurement."),
    ],
    "ja": [
        ("R@K", "上位 K 件に正解が入ったクエリの割合（%）。画像→テキストは各テスト写真がそのキャプションを、"
                "テキスト→画像は各キャプションがその写真を探します。"),
        ("RSUM", "6つの Recall（両方向の R@1・R@5・R@10）の合計（0〜600）。検索精度を1つの数で表します。"),
        ("Δ RSUM", "同じテスト画像でのフルファインチューニングの RSUM との差（ポイント）。"),
        ("フルFT比 RSUM", "この実行の RSUM がフルファインチューニングの何 % か（100 % 超は上回る）。差が本物かは、"
                        "その下の区間から結論が判断します。"),
        ("95 % 区間", "同じ枚数のテスト写真を取り直したときに数値が入る範囲（テスト画像のブートストラップ再標本 2000 回）。"
                     "Δ の区間が 0 を含むときは、このテストセットでは2つの実行を見分けられません。"),
        ("†", "K が候補の数以上のとき R@K は構造上 100 % です（例：テスト画像が4枚しかないときの R@10）。"),
        ("MWA", "MultiWay-Adapter：凍結したバックボーンの各層に小さな学習モジュール（NKE と整合強化器）を加える手法。"
                "このツールが評価する手法です。"),
        ("NKE", "New Knowledge Extractor：MWA のボトルネックアダプタのみ（整合強化器なし）。"),
        ("LoRA", "Low-Rank Adaptation：凍結したバックボーンの注意重みに低ランクの更新を学習します。"),
        ("Full FT", "フルファインチューニング：バックボーンの全重みを学習します。各手法の比較基準です。"),
        ("Frozen", "事前学習済みバックボーンそのもの（ゼロショット、学習なし）。下限の目安です。"),
        ("偶然", "ランダムにスコアを付けるモデルが同じクエリで得る値（ラベル単位では各ラベルの出現頻度から、インスタンス"
               "単位ではおよそ K ÷ 候補数）と、ランダムなモデルの 95 % が入る範囲。"),
        ("学習できず", "RSUM がゼロショットのバックボーン（対応ありの 95 % 区間）や偶然を上回らない実行、または崩壊した"
                  "実行（1つのラベルがほぼすべてに答える）。このときレポートは結論も年間費用も示しません。"),
        ("シード", "--seed だけが異なる実行。手法ごとに複数あれば結論の区間にシード間のばらつきも含まれ、1つなら学習の"
                "ばらつきと差を見分けられないと明記します。"),
        ("品質到達時間", "フルファインチューニングの最良検証 RSUM の一定割合（95 %）に達するまでの実時間。年間費用はこれを"
                      "使います。"),
        ("GPU・CPU時間", "実時間 × 使用デバイス数。年間費用はこれに想定価格 --gpu-cost（CPU 実行では CPU 1時間の価格）を"
                       "掛けたもので、実測ではなく仮定です。"),
    ],
}


def glossary(lang: str) -> list[tuple[str, str]]:
    """(term, explanation) pairs in the report's language."""
    return GLOSSARY.get(lang, GLOSSARY["en"])
