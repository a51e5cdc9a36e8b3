"""The `generate` stage: synthetic interactions for users of the cold (target) domains.

  prepared/train ─▶ histories (one row per user, Ray Data groupby)
                 ─▶ selection (eligible users, a seeded sample within the budget)
                 ─▶ contexts (recent history titles mixed in time order + target-domain candidates)
                 ─▶ backend actors (popularity, semantic, translator, vLLM) score or choose candidates
                 ─▶ synthetic/raw/ (per shard, resumable) and synthetic/generate_report.json
"""
