"""The report's own words in English and Japanese (``--lang en|ja``); data (captions, labels, names) stays as is.

``t(lang, key, **values)`` formats one string. Every key exists in both languages (a test checks it). Numbers are
formatted in `mwa_cli.report.numbers`.
"""

from __future__ import annotations

from typing import Any

LANGS = ("en", "ja")

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Retrieval ROI report",
        "subtitle": "{methods} compared with full fine-tuning on your data",
        "generated": "Generated {date} by mwa {version}",
        "dataset_line": "Dataset {hash} · {images} images, {captions} captions · evaluated on the {split} split "
                        "({n_images} images, {n_captions} captions)",
        "verdict": "Verdict",
        "estimated": "estimated",
        "estimated_note": "Figures marked “estimated” were not measured by training: full fine-tuning's step time "
                          "was measured for {steps} steps on this hardware and extrapolated to the same number of "
                          "samples as “{ref}”. Its recall cannot be estimated without training it.",
        "random_weights_note": "{name} started from a randomly initialised backbone (--weights none): its recall "
                               "says nothing about the pretrained model.",
        "no_baseline": "No full fine-tuning run was found among these runs, so nothing can be compared with it.",
        "no_baseline_hint": "Train one on the same data (same budget), then run the report again:",
        "no_baseline_estimate": "Or add --estimate to measure full fine-tuning's step time on this hardware for a "
                                "few steps and extrapolate (figures marked “estimated”).",
        "baseline_is": "Baseline: {run}",
        "sec_recall": "Retrieval quality",
        "sec_recall_help": "Recall@K in percent (higher is better): image→text and text→image. "
                           "Δ = difference to full fine-tuning in points.",
        "sec_cost": "Training cost",
        "sec_cost_help": "Measured by mwa during training. The small line under a figure compares it with full "
                         "fine-tuning.",
        "sec_roi": "Yearly cost (ROI)",
        "sec_roi_help": "Each production line / product variant gets its own model and is retrained regularly. "
                        "Change the assumptions with the options shown.",
        "sec_plots": "Charts",
        "sec_gallery": "Retrieval examples",
        "sec_gallery_help": "From the {split} split. A green frame or tick marks a correct match.",
        "sec_provenance": "Provenance",
        "sec_notes": "Notes",
        "col_run": "Run",
        "col_method": "Method",
        "col_i2t": "Image → text",
        "col_t2i": "Text → image",
        "col_rsum": "RSUM",
        "col_delta_rsum": "Δ RSUM",
        "col_kept": "Full-FT RSUM kept",
        "col_wall": "Training wall time",
        "col_hours": "{unit}",
        "col_sps": "Samples/s",
        "col_mem": "Peak memory",
        "col_trainable": "Trainable params",
        "col_artefact": "Artefact on disk",
        "col_save_time": "Time saved",
        "col_save_hours": "{unit} saved",
        "col_save_mem": "Memory saved",
        "col_save_size": "Size saved",
        "col_trainings": "Trainings / year",
        "col_hours_year": "{unit} / year",
        "col_cost_year": "Compute / year (assumed price)",
        "col_storage": "Storage",
        "col_cost_diff": "Compute vs full FT",
        "col_storage_diff": "Storage vs full FT",
        "col_device": "Device",
        "col_versions": "torch / mwa",
        "col_command": "Command recorded in config.json (as data, not checked)",
        "col_date": "Date",
        "col_backbone": "Backbone",
        "gpu_hours": "GPU-hours",
        "cpu_hours": "CPU-hours",
        "device_hours": "Device-hours",
        "assumptions": "Assumptions",
        "assume_cost": "Assumed price, not measured: {cost} {currency} per {unit_single} (--gpu-cost sets the "
                       "price of one hour of the device the runs used, here a {unit_single}; --currency)",
        "assume_lines": "Production lines / product variants, each with its own model: {lines} (--lines)",
        "assume_retrains": "Retrains per line per year: {retrains} (--retrains-per-year)",
        "assume_hours": "Training time per retrain = the measured time of each run, on the same hardware",
        "assume_storage": "Storage = one artefact per line; adapter methods also keep one shared copy of the "
                          "backbone ({backbone_size}{backbone_est})",
        "gpu_hour": "GPU-hour",
        "cpu_hour": "CPU-hour",
        "device_hour": "device-hour",
        "plot_recall_time": "Recall vs training time",
        "plot_recall_axis": "Mean recall (%)",
        "plot_time_axis": "Training wall time (min)",
        "plot_loss": "Training loss",
        "plot_loss_axis": "Loss",
        "plot_step_axis": "Step",
        "plot_loss_time_axis": "Training time (min)",
        "plot_per_label": "Mean recall per label",
        "plot_no_data": "No data for this chart.",
        "gallery_t2i": "Text → image: top 5 images for a caption",
        "gallery_i2t": "Image → text: top captions for an image",
        "gallery_none": "No retrieval examples: this run has no eval_topk.json.",
        "gallery_no_images": "Thumbnails unavailable (data dir {data_dir} not found); captions only.",
        "hit": "correct",
        "miss": "wrong",
        "protocol": "Protocol",
        "verdict_label_level": "Recall here is label level: captions repeat in this data, so a caption or photo of "
                               "the query's label counts as a hit.",
        "sec_recall_primary": "Retrieval quality ({protocol}, used for the verdict)",
        "sec_recall_secondary": "Retrieval quality ({protocol})",
        "protocol_instance": "instance level",
        "protocol_label_level": "label level",
        "skipped": "Skipped run folders",
        "verdict_cost": ", saving {saving} a year at the assumed price and counts",
        "verdict_cost_more": ", costing {saving} more a year at the assumed price and counts",
        "verdict_time_only": "{method} took {time} of the (estimated) training time of full fine-tuning; recall "
                             "cannot be compared until a full fine-tuning run is trained{cost}.",
        "verdict_none": "No full fine-tuning run to compare with: train one or use --estimate.",
        "verdict_only_baseline": "Only the full fine-tuning run was found: train another method to compare.",
        "verdict_seeds_better": "Over {na} and {nb} seeds, {method} is better than full fine-tuning on these {n} test "
                                "images: {diff} RSUM (95 % interval {lo}…{hi}, counting both which test images were "
                                "drawn and the seed-to-seed spread; {protocol} protocol).",
        "verdict_seeds_worse": "Over {na} and {nb} seeds, {method} is worse than full fine-tuning on these {n} test "
                               "images: {diff} RSUM (95 % interval {lo}…{hi}, counting both which test images were "
                               "drawn and the seed-to-seed spread; {protocol} protocol).",
        "verdict_seeds_same": "Over {na} and {nb} seeds, {method} is not distinguishable from full fine-tuning on these "
                              "{n} test images: difference {diff} RSUM (95 % interval {lo}…{hi}, counting both which "
                              "test images were drawn and the seed-to-seed spread; {protocol} protocol).",
        "verdict_one_run": "On these {n} test images {method} scored {diff} RSUM against full fine-tuning (95 % "
                           "interval {lo}…{hi} over the test images, {protocol} protocol), but that is one run per "
                           "method, and one run cannot tell training noise from a difference: train each with "
                           "--seeds 3 and report again.",
        "verdict_one_run_noise": " With one run per method, training noise is not counted either (--seeds 3 counts "
                                 "it).",
        "no_verdict_head": "No verdict: a run that did not learn says nothing about its method, so there is no "
                           "comparison and no yearly cost.",
        "stalled_run": "{name} did not learn: {why}.",
        "why_collapse_zero": "it collapsed, image→text R@1 is 0 for every label but {labels} ({zero}: 0)",
        "why_collapse_answer": "it collapsed, {share} % of the {direction} queries are answered by “{label}”",
        "direction_i2t": "image→text",
        "direction_t2i": "text→image",
        "why_interval": ", 95 % interval {lo}…{hi}",
        "why_below_zero_shot": "test RSUM {rsum} is below the untrained backbone's {zero} (difference {diff}"
                               "{interval})",
        "why_not_above_zero_shot": "test RSUM {rsum} is not above the untrained backbone's {zero} (difference "
                                   "{diff}{interval})",
        "why_not_above_chance": "test RSUM {rsum} is not above chance ({chance})",
        "and": " and ",
        "list_sep": "; ",
        "sentence_end": ".",
        "advice_head": "What to do: ",
        "advice_longer": "train longer (the default schedule for this data is {default} steps; these runs had "
                         "{had})",
        "advice_lr": "these runs had the default schedule or more, so try a lower --lr",
        "advice_longer_unknown": "train longer, or with another --lr (these runs had {had} steps)",
        "advice_labels": "check the label descriptions (--label-text, --label-map): the captions are all the model "
                         "learns a label from",
        "advice_backbone": "or use a larger backbone or image size",
        "short_run": "{name} trained {steps} steps, {pct} % of the default schedule for this data ({default} steps): "
                     "its recall will not mean much.",
        "shorter_run": "{name} trained {steps} steps, {pct} % of the default schedule for this data ({default} "
                       "steps): its recall may still have been rising.",
        "zero_shot_missing": "No zero-shot figures: {why}.",
        "curve_other_protocol": "The validation checks of {runs} were logged at instance level (an older mwa), not "
                                "at this report's label level: they are left out of time to quality.",
        "row_chance": "Chance (random ranking)",
        "row_zero_shot": "Zero-shot ({backbone}, untrained)",
        "chance_note": "Chance: what a ranking that orders the candidates at random gets on these queries, with the "
                       "range 95 % of random rankings fall in. Zero-shot: the backbone before any training. A "
                       "trained run has learned something only above both.",
        "roi_withheld": "No yearly cost: the runs did not learn, so there is nothing to put a price on (see the "
                        "verdict).",
        "ttq_below_zero_shot": "Time to {pcts} % is not measured: that share of full fine-tuning's best validation "
                               "RSUM is not above the untrained backbone's {zero}, which meets it without training.",
        "tag_did_not_learn": "did not learn",
        "tag_collapsed": "collapsed",
        "col_protocol_of": "{col} ({protocol})",
        "gallery_hits_label_level": "Correct here means what the verdict counts (label level): a caption with the "
                                    "text of one of the photo's own captions, or a photo that has the query caption "
                                    "(or, with --label key, the same label).",
        "verdict_same": "{method} is not distinguishable from full fine-tuning on these {n} test images (difference "
                        "{diff} RSUM, 95 % interval {lo}…{hi}, {protocol} protocol); {separate}",
        "verdict_separate": "about {need} test images ({more} more) would be needed to separate a difference of "
                            "this size.",
        "verdict_separate_zero": "no number of test images separates a difference of zero.",
        "verdict_no_ci": "{method} kept {kept} of full fine-tuning's test RSUM (no interval: its eval_ranks.json is "
                         "missing; run `mwa eval` on the runs to write it).",
        "verdict_ttq": " It reached {pct} % of full fine-tuning's best validation RSUM after {time} of training, "
                       "{tpct} of the {btime} full fine-tuning needed{cost}.",
        "verdict_ttq_not": " It did not reach {pct} % of full fine-tuning's best validation RSUM within its "
                           "{time} run{cost}.",
        "verdict_ttq_none": " Training time: {time} of full fine-tuning's (whole runs: time to quality could not "
                            "be measured){cost}.",
        "verdict_seeds": " Over {n} seeds: {method} test RSUM {m} ± {sd}, full fine-tuning {bm} ± {bsd}.",
        "verdict_protocol_instance": "instance",
        "verdict_protocol_label_level": "label-level",
        "ttq_no_gain": "Full fine-tuning ({run}) never beat the zero-shot backbone on validation, so time to "
                       "quality cannot be measured against it: times and yearly costs below are whole runs.",
        "tune_both": "{main} and {baseline} both come from `mwa tune` (the same search budget for each method): "
                     "the comparison is between two tuned methods.",
        "tune_one": "{tuned} comes from `mwa tune`, {other} does not: tune {method} too (mwa tune DATA --method "
                    "{method}) to compare two tuned methods.",
        "tune_page": "Tuning trials and the chosen configuration",
        "tune_others": "{runs} come(s) from `mwa tune`; the verdict compares {main} with {baseline}, neither of "
                       "them tuned.",
        "sec_ttq": "Time to quality",
        "sec_ttq_help": "Wall time each run needed to reach a share of full fine-tuning's best validation RSUM "
                        "({ref}; with several seeds, that of the full fine-tuning run of the same seed), counting "
                        "start-up and training but not the validation checks themselves. Every "
                        "method ran the same warm-up / stable / decay schedule. The ROI below uses the time to "
                        "{target} %.",
        "col_best_val": "Best val RSUM",
        "col_to_pct": "To {pct} %",
        "not_reached": "not reached",
        "col_ci": "95 % interval",
        "ci_note": "95 % intervals from {resamples} bootstrap resamples of the {n} test images (seed {seed}); "
                   "Δ intervals are paired (the same resamples for both runs).",
        "sec_seeds": "Across seeds",
        "sec_seeds_help": "Runs that differ only by --seed: mean ± standard deviation.",
        "col_seeds": "Seeds",
        "col_test_rsum": "Test RSUM",
        "roi_basis_note": "Training time per retrain = each run's time to {target} % of full fine-tuning's best "
                          "validation RSUM (“≥” where not reached: the whole run).",
        "plot_val_time": "Validation RSUM vs wall time",
        "plot_val_axis": "Val RSUM",
        "less_than_baseline": "{pct} less",
        "more_than_baseline": "{pct} more",
        "same_as_baseline": "same",
        "gallery_runs": "Shown for {runs}.",
        "na": "—",
        "footer": "Recall, times, memory and sizes were measured by mwa on this data and hardware unless marked "
                  "“estimated”; yearly costs multiply the measured times by the assumed price and counts listed "
                  "under Assumptions.",
        "verdict_too_small": "The {split} split has only {n} images: too few to tell {method} from full fine-tuning "
                             "(difference {diff} RSUM), so there is no better/worse verdict; at least {min} {split} "
                             "images ({more} more) are needed.",
        "trivial_note": "{recalls}: 100 % by construction, only {n} {split} {what} to rank.",
        "trivial_images": "images",
        "trivial_captions": "captions",
        "sec_glossary": "Terms used in this report",
        "scroll_hint": "⇆ Swipe the table sideways for more columns.",
        "glossary_more": "What the terms mean: mwa report --explain",

    },
    "ja": {
        "title": "検索性能と費用対効果レポート",
        "subtitle": "{methods} とフルファインチューニングの比較（お手元のデータ）",
        "generated": "作成日時 {date}・mwa {version}",
        "dataset_line": "データセット {hash}・画像 {images} 枚、キャプション {captions} 件・評価は {split} "
                        "分割（画像 {n_images} 枚、キャプション {n_captions} 件）",
        "verdict": "結論",
        "estimated": "推定",
        "estimated_note": "「推定」と記した数値は学習による実測ではありません。フルファインチューニングの1ステップの"
                          "時間をこのハードウェアで {steps} ステップ計測し、「{ref}」と同じサンプル数に外挿しました。"
                          "その検索精度は学習しない限り推定できません。",
        "random_weights_note": "{name} はランダムに初期化したバックボーンから学習しました（--weights none）。"
                               "その検索精度は事前学習済みモデルについて何も示しません。",
        "no_baseline": "フルファインチューニングの実行結果が見つからないため、比較できません。",
        "no_baseline_hint": "同じデータ（同じ時間予算）で学習してから、もう一度レポートを作成してください：",
        "no_baseline_estimate": "または --estimate を付けると、このハードウェアでフルファインチューニングの"
                                "ステップ時間を数ステップ計測して外挿します（数値には「推定」と表示）。",
        "baseline_is": "基準：{run}",
        "sec_recall": "検索精度",
        "sec_recall_help": "Recall@K（%、高いほど良い）：画像→テキストとテキスト→画像。"
                           "Δ はフルファインチューニングとの差（ポイント）。",
        "sec_cost": "学習コスト",
        "sec_cost_help": "学習中に mwa が実測した値。数値の下の小さな行はフルファインチューニングとの比較です。",
        "sec_roi": "年間コスト（費用対効果）",
        "sec_roi_help": "生産ラインや製品品種ごとに専用モデルを持ち、定期的に再学習すると仮定します。"
                        "前提条件は表示のオプションで変更できます。",
        "sec_plots": "グラフ",
        "sec_gallery": "検索例",
        "sec_gallery_help": "{split} 分割より。緑の枠またはチェックが正解を示します。",
        "sec_provenance": "実行環境と来歴",
        "sec_notes": "注記",
        "col_run": "実行",
        "col_method": "手法",
        "col_i2t": "画像 → テキスト",
        "col_t2i": "テキスト → 画像",
        "col_rsum": "RSUM",
        "col_delta_rsum": "Δ RSUM",
        "col_kept": "フルFT比 RSUM",
        "col_wall": "学習時間（実時間）",
        "col_hours": "{unit}",
        "col_sps": "サンプル/秒",
        "col_mem": "最大メモリ",
        "col_trainable": "学習パラメータ数",
        "col_artefact": "保存サイズ",
        "col_save_time": "時間削減",
        "col_save_hours": "{unit}削減",
        "col_save_mem": "メモリ削減",
        "col_save_size": "サイズ削減",
        "col_trainings": "年間学習回数",
        "col_hours_year": "年間{unit}",
        "col_cost_year": "年間計算費用（想定価格）",
        "col_storage": "保存容量",
        "col_cost_diff": "計算費用（フルFT比）",
        "col_storage_diff": "保存容量（フルFT比）",
        "col_device": "デバイス",
        "col_versions": "torch / mwa",
        "col_command": "config.json に記録されたコマンド（記録のまま、未確認）",
        "col_date": "日時",
        "col_backbone": "バックボーン",
        "gpu_hours": "GPU時間",
        "cpu_hours": "CPU時間",
        "device_hours": "デバイス時間",
        "assumptions": "前提条件",
        "assume_cost": "想定価格（実測ではありません）：{unit_single}あたり {cost} {currency}（--gpu-cost は実行に"
                       "使ったデバイス1時間の価格で、ここでは{unit_single}；--currency）",
        "assume_lines": "専用モデルを持つ生産ライン・製品品種の数：{lines}（--lines）",
        "assume_retrains": "ラインごとの年間再学習回数：{retrains}（--retrains-per-year）",
        "assume_hours": "再学習1回の時間 = 各実行の実測時間（同じハードウェア）",
        "assume_storage": "保存容量 = ラインごとに成果物1つ。アダプタ手法はバックボーンを1つ共有"
                          "（{backbone_size}{backbone_est}）",
        "gpu_hour": "GPU 1時間",
        "cpu_hour": "CPU 1時間",
        "device_hour": "デバイス 1時間",
        "plot_recall_time": "検索精度と学習時間",
        "plot_recall_axis": "平均 Recall（%）",
        "plot_time_axis": "学習時間（分）",
        "plot_loss": "学習損失",
        "plot_loss_axis": "損失",
        "plot_step_axis": "ステップ",
        "plot_loss_time_axis": "学習時間（分）",
        "plot_per_label": "ラベル別の平均 Recall",
        "plot_no_data": "このグラフのデータはありません。",
        "gallery_t2i": "テキスト → 画像：キャプションに対する上位5画像",
        "gallery_i2t": "画像 → テキスト：画像に対する上位キャプション",
        "gallery_none": "検索例はありません（eval_topk.json がありません）。",
        "gallery_no_images": "サムネイルを表示できません（データフォルダ {data_dir} が見つかりません）。"
                             "キャプションのみ表示します。",
        "hit": "正解",
        "miss": "不正解",
        "protocol": "評価方法",
        "verdict_label_level": "このデータはキャプションが重複するため、検索精度はラベル単位で評価しています"
                               "（クエリと同じラベルのキャプション・写真を正解とします）。",
        "sec_recall_primary": "検索精度（{protocol}、判定に使用）",
        "sec_recall_secondary": "検索精度（{protocol}）",
        "protocol_instance": "インスタンス単位",
        "protocol_label_level": "ラベル単位",
        "skipped": "除外した実行フォルダ",
        "verdict_cost": "（想定した価格と件数のもとで年間 {saving} の削減）",
        "verdict_cost_more": "（想定した価格と件数のもとで年間 {saving} の増加）",
        "verdict_time_only": "{method} の学習時間は、フルファインチューニング（推定）の {time} でした。検索精度は"
                             "フルファインチューニングを学習するまで比較できません{cost}。",
        "verdict_none": "比較するフルファインチューニングの実行がありません。学習するか --estimate を使ってください。",
        "verdict_only_baseline": "フルファインチューニングの実行のみ見つかりました。比較する別の手法を学習してください。",
        "verdict_seeds_better": "{na} シードと {nb} シードで、{method} はこの {n} 枚のテスト画像でフルファインチューニング"
                                "より優れています：RSUM {diff}（95 % 区間 {lo}…{hi}、テスト画像の選び方とシード間の"
                                "ばらつきの両方を含む、{protocol} 評価）。",
        "verdict_seeds_worse": "{na} シードと {nb} シードで、{method} はこの {n} 枚のテスト画像でフルファインチューニング"
                               "より劣ります：RSUM {diff}（95 % 区間 {lo}…{hi}、テスト画像の選び方とシード間の"
                               "ばらつきの両方を含む、{protocol} 評価）。",
        "verdict_seeds_same": "{na} シードと {nb} シードで、{method} とフルファインチューニングの差は、この {n} 枚のテスト"
                              "画像では区別できません：RSUM の差 {diff}（95 % 区間 {lo}…{hi}、テスト画像の選び方と"
                              "シード間のばらつきの両方を含む、{protocol} 評価）。",
        "verdict_one_run": "この {n} 枚のテスト画像で {method} のフルファインチューニングに対する RSUM の差は {diff} でした"
                           "（テスト画像についての 95 % 区間 {lo}…{hi}、{protocol} 評価）。ただし各手法1回の実行"
                           "では、学習のばらつきと本当の差を見分けられません。--seeds 3 で各手法を学習し、もう一度"
                           "レポートを作成してください。",
        "verdict_one_run_noise": " 各手法1回の実行のため、学習のばらつきも数えられていません（--seeds 3 で数えられます）。",
        "no_verdict_head": "結論なし：学習できなかった実行からは手法について何も分からないため、比較も年間費用も"
                           "示しません。",
        "stalled_run": "{name} は学習できていません：{why}。",
        "why_collapse_zero": "崩壊しています。{labels} 以外のすべてのラベルで画像→テキスト R@1 が 0 です（{zero}：0）",
        "why_collapse_answer": "崩壊しています。{direction} のクエリの {share} % が「{label}」で答えられています",
        "direction_i2t": "画像→テキスト",
        "direction_t2i": "テキスト→画像",
        "why_interval": "、95 % 区間 {lo}…{hi}",
        "why_below_zero_shot": "テスト RSUM {rsum} は未学習のバックボーンの {zero} を下回ります（差 {diff}{interval}）",
        "why_not_above_zero_shot": "テスト RSUM {rsum} は未学習のバックボーンの {zero} を上回っていません（差 {diff}"
                                   "{interval}）",
        "why_not_above_chance": "テスト RSUM {rsum} が偶然の水準（{chance}）を上回っていません",
        "and": "、",
        "list_sep": "。",
        "sentence_end": "。",
        "advice_head": "対処：",
        "advice_longer": "もっと長く学習してください（このデータの既定のスケジュールは {default} ステップ、これらの実行は "
                         "{had}）",
        "advice_lr": "これらの実行は既定のスケジュール以上学習しているので、より小さい --lr を試してください",
        "advice_longer_unknown": "もっと長く、または別の --lr で学習してください（これらの実行は {had} ステップ）",
        "advice_labels": "ラベルの説明（--label-text、--label-map）を確認してください。モデルはキャプションからしか"
                         "ラベルを学べません",
        "advice_backbone": "または、より大きいバックボーンや画像サイズを使ってください",
        "short_run": "{name} の学習は {steps} ステップで、このデータの既定のスケジュール（{default} ステップ）の {pct} % "
                     "です：その検索精度はほとんど意味を持ちません。",
        "shorter_run": "{name} の学習は {steps} ステップで、このデータの既定のスケジュール（{default} ステップ）の "
                       "{pct} % です：検索精度はまだ上がる途中だった可能性があります。",
        "zero_shot_missing": "ゼロショットの数値はありません：{why}。",
        "curve_other_protocol": "{runs} の検証はインスタンス単位で記録されており（古い mwa）、このレポートのラベル単位"
                                "ではないため、品質到達時間から除きました。",
        "row_chance": "偶然（ランダムな順位付け）",
        "row_zero_shot": "ゼロショット（{backbone}、未学習）",
        "chance_note": "偶然：候補をランダムに並べた場合にこれらのクエリで得られる値と、ランダムな順位付けの 95 % が"
                       "入る範囲。ゼロショット：学習前のバックボーン。学習した実行は、両方を上回って初めて何かを"
                       "学んだと言えます。",
        "roi_withheld": "年間費用はありません：実行が学習できていないため、値段を付ける対象がありません（結論を参照）。",
        "ttq_below_zero_shot": "{pcts} % までの時間は測りません：フルファインチューニングの最良検証 RSUM のその割合は、"
                               "学習なしで達する未学習のバックボーンの {zero} を上回らないためです。",
        "tag_did_not_learn": "学習できず",
        "tag_collapsed": "崩壊",
        "col_protocol_of": "{col}（{protocol}）",
        "gallery_hits_label_level": "ここでの正解は結論と同じ数え方（ラベル単位）です：写真自身のキャプションと同じ文の"
                                    "キャプション、またはクエリのキャプションを持つ写真（ラベルをキーにした場合は同じ"
                                    "ラベル）を正解とします。",
        "verdict_same": "{method} とフルファインチューニングの差は、この {n} 枚のテスト画像では区別できません（RSUM の差 "
                        "{diff}、95 % 区間 {lo}…{hi}、{protocol} 評価）。{separate}",
        "verdict_separate": "この大きさの差を見分けるには、約 {need} 枚（あと {more} 枚）のテスト画像が必要です。",
        "verdict_separate_zero": "差がゼロなので、テスト画像を増やしても見分けられません。",
        "verdict_no_ci": "{method} はフルファインチューニングのテスト RSUM の {kept} でした（区間なし："
                         "eval_ranks.json がありません。`mwa eval` で作成してください）。",
        "verdict_ttq": " フルファインチューニングの最良検証 RSUM の {pct} % に学習 {time} で到達しました"
                       "（フルファインチューニングの {btime} の {tpct}）{cost}。",
        "verdict_ttq_not": " 学習 {time} の間にフルファインチューニングの最良検証 RSUM の {pct} % に到達しませんでした"
                           "{cost}。",
        "verdict_ttq_none": " 学習時間はフルファインチューニングの {time} です（品質到達時間を測れないため実行全体で比較）{cost}。",
        "verdict_seeds": " {n} シードの平均：{method} のテスト RSUM {m} ± {sd}、フルファインチューニング {bm} ± {bsd}。",
        "verdict_protocol_instance": "インスタンス単位",
        "verdict_protocol_label_level": "ラベル単位",
        "ttq_no_gain": "フルファインチューニング（{run}）は検証でゼロショットを一度も上回らなかったため、品質到達時間は"
                       "測れません。以下の時間と年間費用は実行全体のものです。",
        "tune_both": "{main} と {baseline} はどちらも `mwa tune` の結果です（各手法に同じ探索予算）。比較は調整済みの"
                     "手法どうしの比較です。",
        "tune_one": "{tuned} は `mwa tune` の結果ですが、{other} はそうではありません。調整済みの手法どうしを比べるには "
                    "{method} も調整してください（mwa tune DATA --method {method}）。",
        "tune_page": "調整の試行と選ばれた設定",
        "tune_others": "{runs} は `mwa tune` の結果です。判定が比べる {main} と {baseline} はどちらも調整されていません。",
        "sec_ttq": "品質到達時間",
        "sec_ttq_help": "フルファインチューニングの最良検証 RSUM（{ref}。複数シードでは同じシードの実行のもの）の一定割合に"
                        "達するまでの実時間（起動と学習を含み、"
                        "検証そのものの時間は含みません）。すべての手法が同じウォームアップ／一定／減衰スケジュールで"
                        "学習しました。下の ROI は {target} % 到達時間を使います。",
        "col_best_val": "最良検証 RSUM",
        "col_to_pct": "{pct} % まで",
        "not_reached": "未到達",
        "col_ci": "95 % 区間",
        "ci_note": "95 % 区間は {n} 枚のテスト画像のブートストラップ再標本 {resamples} 回（シード {seed}）による。"
                   "Δ の区間は対応あり（両方の実行に同じ再標本）。",
        "sec_seeds": "シード間のばらつき",
        "sec_seeds_help": "--seed だけが異なる実行の平均 ± 標準偏差。",
        "col_seeds": "シード",
        "col_test_rsum": "テスト RSUM",
        "roi_basis_note": "1回の再学習の時間 = 各実行がフルファインチューニングの最良検証 RSUM の {target} % に"
                          "達するまでの時間（「≥」は未到達：実行全体）。",
        "plot_val_time": "検証 RSUM と実時間",
        "plot_val_axis": "検証 RSUM",
        "less_than_baseline": "{pct} 削減",
        "more_than_baseline": "{pct} 増加",
        "same_as_baseline": "同等",
        "gallery_runs": "{runs} の結果を表示しています。",
        "na": "—",
        "footer": "検索精度・時間・メモリ・サイズは、「推定」と記したものを除き、このデータとハードウェアで mwa が"
                  "実測した値です。年間費用は実測時間に「前提条件」の想定価格と件数を掛けたものです。",
        "verdict_too_small": "{split} 分割の画像は {n} 枚しかなく、{method} とフルファインチューニングを見分けるには"
                             "少なすぎるため、優劣は判定しません（RSUM の差 {diff}）。判定には少なくとも {min} 枚"
                             "（あと {more} 枚）の画像が必要です。",
        "trivial_note": "{recalls} は構造上 100 % です：{split} の{what}が {n} 件しかありません。",
        "trivial_images": "画像",
        "trivial_captions": "キャプション",
        "sec_glossary": "このレポートの用語",
        "scroll_hint": "⇆ 表を横にスワイプすると残りの列が見えます。",
        "glossary_more": "用語の説明：mwa report --explain",

    },
}


def t(lang: str, key: str, **values: Any) -> str:
    table = STRINGS.get(lang, STRINGS["en"])
    text = table.get(key, STRINGS["en"][key])
    return text.format(**values) if values else text
