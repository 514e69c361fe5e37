//! The poem line banks: per theme, Chinese lines of five and seven characters and English
//! rhyming couplets. Original lines, written so that any four make a well-formed poem.

/// A theme: English phrase for prompts, English key word, Chinese character.
pub struct Theme {
    pub en: &'static str,
    pub en_key: &'static str,
    pub zh: &'static str,
    pub five: [&'static str; 6],
    pub seven: [&'static str; 6],
    pub couplets: [(&'static str, &'static str); 4],
}

pub const THEMES: [Theme; 8] = [
    Theme {
        en: "the moon",
        en_key: "moon",
        zh: "月",
        five: [
            "明月照高楼",
            "月光满西窗",
            "孤月挂天边",
            "月下思故乡",
            "清辉映小桥",
            "夜静月如霜",
        ],
        seven: [
            "一轮明月挂天边",
            "月光如水照人间",
            "月下独行思故乡",
            "清辉洒落小桥头",
            "明月相伴到天明",
            "千里月色共此时",
        ],
        couplets: [
            (
                "The moon is rising over the hill,",
                "The night is quiet, calm and still.",
            ),
            (
                "The silver moon is shining bright,",
                "It fills the garden with its light.",
            ),
            (
                "I watch the moon above the bay,",
                "It guides the boats along their way.",
            ),
            (
                "The moon is round, the sky is deep,",
                "It sings the sleeping town to sleep.",
            ),
        ],
    },
    Theme {
        en: "spring",
        en_key: "spring",
        zh: "春",
        five: [
            "春风吹绿柳",
            "春雨润新苗",
            "燕子报春来",
            "桃花映春水",
            "春山鸟语多",
            "田间春意浓",
        ],
        seven: [
            "春风吹绿柳千条",
            "细雨春来润万家",
            "燕子归来报春到",
            "桃花开满小村庄",
            "春日山中鸟语多",
            "一年好景在春天",
        ],
        couplets: [
            (
                "In spring the fields are fresh and green,",
                "The brightest colours ever seen.",
            ),
            (
                "The spring rain falls upon the ground,",
                "And flowers open all around.",
            ),
            (
                "The birds of spring begin to sing,",
                "They welcome back the warmth of spring.",
            ),
            (
                "The spring sun wakes the sleepy tree,",
                "And buds appear for all to see.",
            ),
        ],
    },
    Theme {
        en: "autumn",
        en_key: "autumn",
        zh: "秋",
        five: [
            "秋风扫落叶",
            "秋月照寒江",
            "雁字写秋天",
            "秋山红叶多",
            "金秋稻谷香",
            "秋夜露华浓",
        ],
        seven: [
            "秋风阵阵落叶黄",
            "一行大雁过秋山",
            "秋月高悬照小楼",
            "金秋稻谷满田香",
            "秋夜凉风入梦来",
            "红叶满山秋意浓",
        ],
        couplets: [
            (
                "In autumn leaves of red and gold,",
                "Come drifting down as days grow cold.",
            ),
            (
                "The autumn wind begins to blow,",
                "The geese fly south in one long row.",
            ),
            (
                "The autumn fields are ripe with grain,",
                "Then comes the cool and gentle rain.",
            ),
            (
                "The autumn trees stand tall and bare,",
                "A crisp and smoky scent is there.",
            ),
        ],
    },
    Theme {
        en: "snow",
        en_key: "snow",
        zh: "雪",
        five: [
            "白雪落山头",
            "雪花满天飞",
            "寒梅映雪开",
            "雪夜一灯明",
            "千山雪色寒",
            "雪后路人稀",
        ],
        seven: [
            "白雪纷纷落满山",
            "雪花飞舞过江来",
            "寒梅傲雪独自开",
            "雪夜围炉话旧年",
            "千山万水雪茫茫",
            "一场大雪兆丰年",
        ],
        couplets: [
            (
                "The snow falls softly through the night,",
                "It shines beneath the lantern light.",
            ),
            (
                "The fields are deep in winter snow,",
                "The rivers slowly cease to flow.",
            ),
            (
                "We build a man of snow today,",
                "And through the drifts we run and play.",
            ),
            (
                "The snow lies thick on every hill,",
                "The frozen world is white and still.",
            ),
        ],
    },
    Theme {
        en: "a river",
        en_key: "river",
        zh: "江",
        five: [
            "江水向东流",
            "大江日夜流",
            "江上一孤舟",
            "春江水自流",
            "江边柳色新",
            "清江映远山",
        ],
        seven: [
            "大江东去浪滔滔",
            "江上孤舟夜未眠",
            "一江碧水绕青山",
            "江边杨柳绿如烟",
            "清江明月照归人",
            "江风吹过小渔村",
        ],
        couplets: [
            (
                "The river winds around the hill,",
                "It turns the old and wooden mill.",
            ),
            (
                "The river flows along the plain,",
                "And gathers every drop of rain.",
            ),
            (
                "Beside the river, tall and green,",
                "The willows bend where boats have been.",
            ),
            (
                "The river sparkles in the day,",
                "And carries little boats away.",
            ),
        ],
    },
    Theme {
        en: "mountains",
        en_key: "mountain",
        zh: "山",
        five: [
            "青山入白云",
            "山高水自长",
            "远山云雾深",
            "山中鸟自鸣",
            "山路入林深",
            "山间清泉流",
        ],
        seven: [
            "青山隐隐入云中",
            "山高路远不知名",
            "远山云雾绕千重",
            "山中鸟语伴泉声",
            "一座青山立水边",
            "山间小路通人家",
        ],
        couplets: [
            (
                "The mountain rises tall and steep,",
                "Where eagles glide and shadows sleep.",
            ),
            (
                "Upon the mountain, cold and bright,",
                "The stars shine clearly through the night.",
            ),
            (
                "The mountain path is long and slow,",
                "The quiet valleys lie below.",
            ),
            (
                "The mountain wears a cloudy crown,",
                "The little streams come rushing down.",
            ),
        ],
    },
    Theme {
        en: "the wind",
        en_key: "wind",
        zh: "风",
        five: [
            "清风拂面来",
            "风吹竹叶响",
            "晚风入小窗",
            "春风暖人心",
            "风过满林香",
            "西风送雁归",
        ],
        seven: [
            "清风吹过小河边",
            "风吹竹叶沙沙响",
            "晚风轻轻入小窗",
            "西风送雁过南山",
            "一阵凉风满院香",
            "风起云飞天地宽",
        ],
        couplets: [
            (
                "The wind is blowing through the trees,",
                "It shakes the branches and the leaves.",
            ),
            (
                "The wind comes rushing down the lane,",
                "And beats against the window pane.",
            ),
            (
                "I hear the wind across the ground,",
                "It makes a soft and whistling sound.",
            ),
            (
                "The wind will lift my kite today,",
                "And carry it so far away.",
            ),
        ],
    },
    Theme {
        en: "flowers",
        en_key: "flower",
        zh: "花",
        five: [
            "花开满院香",
            "桃花映水红",
            "花间蝶影飞",
            "春花开满山",
            "落花随水流",
            "花下一壶茶",
        ],
        seven: [
            "花开满院香满城",
            "桃花朵朵映水红",
            "花间蝴蝶双双飞",
            "春来百花开满山",
            "落花流水去无声",
            "花下闲坐一壶茶",
        ],
        couplets: [
            (
                "The flowers open in the light,",
                "Their colours warm and soft and bright.",
            ),
            (
                "The garden flowers, fresh and sweet,",
                "Grow all along the sunny street.",
            ),
            (
                "The flowers sway beside the wall,",
                "The bees come visit one and all.",
            ),
            (
                "I pick the flowers in the field,",
                "And see the gifts the seasons yield.",
            ),
        ],
    },
];
